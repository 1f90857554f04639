"""Class-based sorting and dynamic thresholds against hand-made statistics."""

import math

import pytest
import torch

from lse_fast import selection
from lse_fast.selection import candidates, portions, select, share


def stats(rows):
    """rows: per image a dict {class: (pixels, mean_conf, mean_ent)} -> sums [N, C]."""
    c = 4
    n = len(rows)
    pixels = torch.zeros(n, c, dtype=torch.int64)
    conf = torch.zeros(n, c)
    ent = torch.zeros(n, c)
    for i, row in enumerate(rows):
        for k, (p, mc, me) in row.items():
            pixels[i, k] = p
            conf[i, k] = mc * p
            ent[i, k] = me * p
    return pixels, conf, ent


def test_share_rounding():
    # paper: len(images predicting c) * p / C
    assert share(2975, 0.1, 19) == math.ceil(2975 * 0.1 / 19) == 16
    assert share(2975, 0.1, 19, "floor") == 15
    assert share(190, 0.1, 19) == 1  # 1.0000000000000002 is 1, not 2
    assert share(190, 0.1, 19, "floor") == 1
    assert share(3, 0.1, 16) == 1  # at least one image of a predicted class
    assert share(3, 0.1, 16, "floor") == 0
    assert share(0, 0.4, 19) == 0
    assert share(5, 1.0, 1) == 5  # never more than the candidates
    with pytest.raises(ValueError, match="rounding"):
        share(3, 0.1, 16, "round")


def test_select_by_class_share_and_union():
    # 8 images, classes 0..3; C = 2 active classes (0 and 1) -> share = ceil(n_c * 0.5 / 2)
    rows = [
        {0: (10, 0.9, 0.1), 1: (5, 0.5, 0.5)},
        {0: (10, 0.8, 0.2)},
        {0: (10, 0.7, 0.3), 1: (5, 0.95, 0.05)},
        {0: (10, 0.6, 0.4), 1: (5, 0.9, 0.15), 3: (9, 0.99, 0.01)},
        {0: (10, 0.5, 0.5)},
        {0: (10, 0.4, 0.6), 1: (5, 0.85, 0.25)},
        {0: (10, 0.3, 0.7)},
        {0: (10, 0.2, 0.8)},
    ]
    pixels, conf, ent = stats(rows)
    s = select(pixels, conf, ent, 0.5, classes=[0, 1])
    # class 0: 8 candidates -> ceil(8*0.5/2)=2: images 0, 1; h_0 from image 1 (last selected)
    # class 1: 4 candidates (0,2,3,5) -> ceil(4*0.5/2)=1: image 2 (U 0.95); h_1 from image 2
    assert s.per_class[0].tolist() == [0, 1]
    assert s.per_class[1].tolist() == [2]
    assert s.per_class[2].tolist() == [] and s.per_class[3].tolist() == []  # class 3 not active: skipped
    assert s.indices.tolist() == [0, 1, 2]
    assert s.counts == [2, 1, 0, 0]
    assert s.candidates == [8, 4, 0, 0]
    assert s.thresholds[0].item() == pytest.approx(0.2)
    assert s.thresholds[1].item() == pytest.approx(0.05)
    assert math.isnan(s.thresholds[2].item()) and math.isnan(s.thresholds[3].item())
    assert s.threshold_images == [1, 2, None, None]
    assert s.filter_thresholds().tolist()[2:] == [-1.0, -1.0]


def test_first_unselected_threshold_option():
    rows = [{0: (4, 0.9, 0.1)}, {0: (4, 0.8, 0.2)}, {0: (4, 0.7, 0.3)}, {0: (4, 0.6, 0.9)}]
    pixels, conf, ent = stats(rows)
    s = select(pixels, conf, ent, 0.5, classes=[0])  # C=1: ceil(4*0.5)=2
    assert s.indices.tolist() == [0, 1]
    assert s.thresholds[0].item() == pytest.approx(0.2)
    s = select(pixels, conf, ent, 0.5, classes=[0], threshold_image="first_unselected")
    assert s.indices.tolist() == [0, 1]  # same images
    assert s.thresholds[0].item() == pytest.approx(0.3)
    assert s.threshold_images[0] == 2
    # all candidates selected: falls back to the last selected one
    s = select(pixels, conf, ent, 1.0, classes=[0], threshold_image="first_unselected")
    assert s.threshold_images[0] == 3


def test_duplicates_removed_and_sorted():
    # the same image is the best of every class
    rows = [{0: (3, 0.99, 0.0), 1: (3, 0.99, 0.0), 2: (3, 0.99, 0.0)}] + [
        {0: (3, 0.5, 0.5), 1: (3, 0.5, 0.5), 2: (3, 0.5, 0.5)} for _ in range(5)
    ]
    pixels, conf, ent = stats(rows)
    s = select(pixels, conf, ent, 0.1, classes=[0, 1, 2])  # ceil(6*0.1/3)=1 per class
    assert [t.tolist() for t in s.per_class[:3]] == [[0], [0], [0]]
    assert s.indices.tolist() == [0]


def test_classes_never_predicted_and_empty_set():
    rows = [{0: (4, 0.9, 0.1)}, {0: (4, 0.8, 0.2)}]
    pixels, conf, ent = stats(rows)
    s = select(pixels, conf, ent, 0.1)  # all 4 columns active, 1..3 never predicted
    assert s.indices.tolist() == [0]
    assert s.counts == [1, 0, 0, 0]
    assert torch.isnan(s.thresholds[1:]).all()
    # nothing predicted at all
    z = torch.zeros(3, 4, dtype=torch.int64)
    s = select(z, z.float(), z.float(), 0.3)
    assert s.indices.numel() == 0 and s.counts == [0, 0, 0, 0]
    # no image at all
    z = torch.zeros(0, 4, dtype=torch.int64)
    s = select(z, z.float(), z.float(), 0.3)
    assert s.indices.numel() == 0


def test_per_class_share_uses_number_of_dataset_classes():
    # 40 images each predicting classes 0..3: with C=4 -> ceil(40*0.1/4)=1 per class; with C=2 -> 2
    n = 40
    pixels = torch.full((n, 4), 5, dtype=torch.int64)
    conf = torch.rand(n, 4) * 5
    ent = torch.rand(n, 4) * 5
    assert select(pixels, conf, ent, 0.1).counts == [1, 1, 1, 1]
    assert select(pixels, conf, ent, 0.1, classes=[0, 2]).counts == [2, 0, 2, 0]


def test_ties_take_lower_index_first():
    rows = [{0: (2, 0.5, 0.1)}, {0: (2, 0.9, 0.2)}, {0: (2, 0.9, 0.3)}, {0: (2, 0.9, 0.4)}]
    pixels, conf, ent = stats(rows)
    s = select(pixels, conf, ent, 0.5, classes=[0])
    assert s.per_class[0].tolist() == [1, 2]


def test_matches_brute_force_on_random_stats():
    g = torch.Generator().manual_seed(3)
    n, c = 57, 6
    pixels = torch.randint(0, 4, (n, c), generator=g) * torch.randint(0, 50, (n, c), generator=g)
    conf = torch.rand(n, c, generator=g) * pixels
    ent = torch.rand(n, c, generator=g) * pixels
    for p in (0.1, 0.25, 0.4):
        s = select(pixels, conf, ent, p)
        union = set()
        for k in range(c):
            imgs = [i for i in range(n) if pixels[i, k] > 0]
            imgs.sort(key=lambda i: (-(conf[i, k].item() / pixels[i, k].item()), i))
            kk = math.ceil(round(len(imgs) * p / c, 9))
            assert s.per_class[k].tolist() == imgs[:kk]
            union |= set(imgs[:kk])
            if kk:
                t = imgs[kk - 1]
                assert s.thresholds[k].item() == pytest.approx(ent[t, k].item() / pixels[t, k].item(), rel=1e-6)
        assert s.indices.tolist() == sorted(union)


def test_candidates_contain_every_final_selection():
    g = torch.Generator().manual_seed(5)
    n, c, p = 80, 5, 0.3
    pixels = torch.randint(0, 3, (n, c), generator=g) * 7
    conf = torch.rand(n, c, generator=g) * pixels
    ent = torch.rand(n, c, generator=g) * pixels
    final = select(pixels, conf, ent, p, threshold_image="first_unselected")
    need = set(final.indices.tolist()) | {t for t in final.threshold_images if t is not None}
    kmax = share(n, p, c) + 1
    # streaming: candidates on every prefix; an image dropped once never comes back
    kept = set()
    for end in range(10, n + 1, 10):
        seen_pixels = pixels.clone()
        seen_pixels[end:] = 0
        cand = set(candidates(seen_pixels, conf, kmax).tolist())
        new = set(range(end - 10, end))
        kept = (kept | new) & cand
    assert need <= kept
    assert len(kept) <= c * kmax


def test_portions_schedule():
    assert portions() == [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4]
    assert portions(0.1, 0.05, 0.2) == [0.1, 0.15, 0.2]
    with pytest.raises(ValueError, match="portions"):
        portions(0.1, 0.0, 0.4)


def test_bad_arguments():
    z = torch.zeros(3, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="portion"):
        select(z, z.float(), z.float(), 0.0)
    with pytest.raises(ValueError, match="threshold_image"):
        select(z, z.float(), z.float(), 0.1, threshold_image="first")
    with pytest.raises(ValueError, match="class_entropy"):
        select(z, z.float(), torch.zeros(3, 5), 0.1)
    with pytest.raises(ValueError, match="classes"):
        select(z, z.float(), z.float(), 0.1, classes=[4])
    assert selection.THRESHOLD_IMAGES == ("last_selected", "first_unselected")


def test_zero_share_rule():
    # 3 candidates of class 0 with C=1 and p=0.2: floor(0.6)=0 images.
    rows = [{0: (4, 0.7, 0.3)}, {0: (4, 0.9, 0.1)}, {0: (4, 0.8, 0.2)}]
    pixels, conf, ent = stats(rows)
    skip = select(pixels, conf, ent, 0.2, classes=[0], rounding="floor")
    assert skip.counts[0] == 0 and math.isnan(skip.thresholds[0].item()) and skip.threshold_images[0] is None
    assert skip.filter_thresholds()[0].item() == -1.0  # every pixel of class 0 ignored
    for image_rule in selection.THRESHOLD_IMAGES:
        top = select(pixels, conf, ent, 0.2, classes=[0], rounding="floor", zero_share="top_image",
                     threshold_image=image_rule)
        assert top.counts[0] == 0 and top.indices.numel() == 0  # still nothing selected
        assert top.threshold_images[0] == 1  # image 1 has the highest U_0
        assert top.thresholds[0].item() == pytest.approx(0.1)
    # a class with a non-zero share is unaffected by the rule
    a = select(pixels, conf, ent, 0.5, classes=[0], rounding="floor")
    b = select(pixels, conf, ent, 0.5, classes=[0], rounding="floor", zero_share="top_image")
    assert a.threshold_images == b.threshold_images and torch.allclose(a.thresholds, b.thresholds, equal_nan=True)
    with pytest.raises(ValueError, match="zero_share"):
        select(pixels, conf, ent, 0.5, zero_share="top")


def test_minmax_sums_equal_the_normalised_map_summed():
    import lse_fast

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 9, 11, generator=g) * 2
    s = lse_fast.ops.score(logits)
    norm, _, _ = selection.minmax_class_entropy(s.entropy, s.label, 4)
    want = torch.zeros(3, 4, dtype=torch.float64)
    want.scatter_add_(1, s.label.reshape(3, -1), norm.reshape(3, -1).double())
    got = selection.minmax_class_entropy_sums(s, 4)
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="entropy"):
        selection.minmax_class_entropy(s.entropy, s.label[:, :2], 4)


def test_filter_map_and_pseudo_label_choices():
    import lse_fast

    g = torch.Generator().manual_seed(4)
    probs = torch.softmax(torch.randn(1, 3, 6, 8, generator=g), 1)
    thr = torch.tensor([0.5, 0.9, 0.7])
    ent = torch.special.entr(probs).sum(1) / math.log(3)
    want = (ent <= thr[probs.argmax(1)]).float()
    assert torch.equal(selection.filter_map(probs, thr), want)
    boxes = torch.tensor([[0.0, 0.0, 0.0, 8.0, 6.0]])
    default = selection.pseudo_labels(probs, boxes, (6, 8), thr)
    assert torch.equal(default, lse_fast.ops.crop_pseudo_labels(probs, boxes, (6, 8), thr))
    for bad, kw in (("entropy_norm", {"entropy_norm": "log"}), ("filter_interp", {"filter_interp": "area"})):
        with pytest.raises(ValueError, match=bad):
            selection.pseudo_labels(probs, boxes, (6, 8), thr, **kw)
