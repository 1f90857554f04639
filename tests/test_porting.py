"""Every recipe of docs/porting.md, executed: our call against the math of
the code it replaces, written out here from reading that code (DAFormer/MIC,
CRST/CBST, ESL, the LSE authors' code, kornia). No code of theirs is copied.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from lse_fast import ops, selection
from lse_fast.stats import ScoreSummary, class_balanced_pseudo_labels, class_subsample, confidence_share


def biased_logits(n, c, h, w, seed, scale=2.0):
    """Random logits whose images favour different classes (so every class
    is predicted by a varying number of images)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g) * scale
    bias = torch.randn(n, c, 1, 1, generator=g) * 2.0
    return (x + bias).float()


# ---------------------------------------------------------------- LSE authors
def authors_entropy(p):
    """Their self-entropy: -sum p log(p + 1e-12) over classes, float64 here."""
    p = p.double()
    return -(p * torch.log(p + 1e-12)).sum(1)


def authors_minmax(ent, label, c):
    """Their per-image per-class min-max rescaling (0/0 gives NaN, as theirs)."""
    out = ent.clone()
    for i in range(ent.shape[0]):
        for k in range(c):
            m = label[i] == k
            if m.any():
                v = ent[i][m]
                out[i][m] = (v - v.min()) / (v.max() - v.min())
    return out


def authors_selection(logits, portion, c):
    """LSE.py's class-based sorting and thresholds, per the code: per image and
    class the mean max-prob; images sorted by it descending; int(len * p / 19)
    of them kept (19 = the class count there); the threshold of class c is the
    mean min-max entropy of its pixels in the first unselected image (the top
    image when none is selected)."""
    p = torch.softmax(logits.double(), 1)
    conf, label = p.max(1)
    ent = authors_minmax(authors_entropy(p), label, c)
    selected, thresholds = set(), {}
    for k in range(c):
        ranked = [(conf[i][label[i] == k].mean().item(), i) for i in range(len(p)) if (label[i] == k).any()]
        ranked.sort(reverse=True)
        names = [i for _, i in ranked]
        keep = int(len(names) * (portion / c))
        selected |= set(names[:keep])
        t = names[keep]  # their code: IndexError when every image is kept
        thresholds[k] = ent[t][label[t] == k].mean().item()
    return selected, thresholds


def our_lse_tables(logits, c, batch=4, size=None, **kw):
    pixels, conf, ent = [], [], []
    for i in range(0, len(logits), batch):
        s = ops.score(logits[i:i + batch], size, **kw) if (size or kw) else ops.score(logits[i:i + batch])
        pixels.append(s.class_pixels)
        conf.append(s.class_confidence.double())
        ent.append(selection.minmax_class_entropy_sums(s, c))
    return torch.cat(pixels), torch.cat(conf), torch.cat(ent)


def test_lse_authors_selection_and_thresholds():
    c, portion = 4, 0.4  # int(n_c * 0.1): 12 candidates keep 1, fewer keep 0 (the zero-share rule)
    logits = biased_logits(12, c, 12, 16, seed=0)
    logits[6:, 3] -= 30.0  # class 3 predicted in 6 images only: int(6 * 0.1) = 0
    pixels, conf, ent = our_lse_tables(logits, c)
    ours = selection.select(pixels, conf, ent, portion, rounding="floor",
                            threshold_image="first_unselected", zero_share="top_image")
    theirs, th = authors_selection(logits, portion, c)
    assert set(ours.indices.tolist()) == theirs
    assert 0 in ours.counts and max(ours.counts) > 0  # both rules exercised
    for k, t in th.items():
        if math.isnan(t):  # their 0/0 (a class with constant entropy in that image); ours is 0 there
            assert ours.thresholds[k].item() == 0.0
        else:
            assert ours.thresholds[k].item() == pytest.approx(t, abs=1e-5)


def test_lse_authors_selection_on_upsampled_logits():
    c, portion, size = 4, 0.4, (24, 32)
    low = biased_logits(12, c, 6, 8, seed=1)
    low[6:, 3] -= 30.0
    pixels, conf, ent = our_lse_tables(low, c, size=size, align_corners=True)
    up = F.interpolate(low, size=size, mode="bilinear", align_corners=True)  # their DeepLab forward
    ours = selection.select(pixels, conf, ent, portion, rounding="floor",
                            threshold_image="first_unselected", zero_share="top_image")
    theirs, th = authors_selection(up, portion, c)
    assert set(ours.indices.tolist()) == theirs
    for k, t in th.items():
        assert ours.thresholds[k].item() == (0.0 if math.isnan(t) else pytest.approx(t, abs=1e-5))


def authors_patch_labels(probs, boxes, size, thresholds):
    """LSE.py's Generate(): keep-map (E < h[argmax], E min-max rescaled), crop
    [y1:y2, x1:x2] of probabilities and map, both resized bilinearly with
    align_corners=True, label = argmax, 255 where the resized map is 0."""
    c = probs.shape[1]
    label = probs.argmax(1)
    ent = authors_minmax(authors_entropy(probs), label, c)
    keep = (ent < thresholds.double()[label]).double()
    out = []
    for b, x1, y1, x2, y2 in boxes.long().tolist():
        p = F.interpolate(probs[b:b + 1, :, y1:y2, x1:x2].double(), size, mode="bilinear", align_corners=True)
        m = F.interpolate(keep[b:b + 1, None, y1:y2, x1:x2], size, mode="bilinear", align_corners=True)
        lab = p.argmax(1)[0]
        lab[m[0, 0] == 0] = 255
        out.append(lab)
    return torch.stack(out).to(torch.uint8)


def test_lse_authors_image_patches():
    g = torch.Generator().manual_seed(2)
    img = torch.rand(2, 3, 24, 32, generator=g)
    boxes = torch.tensor([[0, 4, 2, 20, 14], [1, 0, 10, 16, 22]], dtype=torch.float32)  # x, y, x + w, y + h
    got = ops.crop_resize(img, boxes, (24, 32), align_corners=True)
    for j, (b, x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        want = F.interpolate(img[b:b + 1, :, y1:y2, x1:x2], (24, 32), mode="bilinear", align_corners=True)
        torch.testing.assert_close(got[j:j + 1], want, atol=1e-6, rtol=0)


def test_lse_authors_patch_pseudo_labels():
    c = 4
    probs = torch.softmax(biased_logits(2, c, 24, 32, seed=3), 1)
    thresholds = torch.tensor([0.3, 0.5, 0.4, 0.6])
    boxes = torch.tensor([[0, 4, 2, 20, 14], [1, 0, 10, 16, 22]], dtype=torch.float32)
    got = selection.pseudo_labels(probs, boxes, (24, 32), thresholds, entropy_norm="minmax",
                                  filter_interp="bilinear", align_corners=True)
    want = authors_patch_labels(probs, boxes, (24, 32), thresholds)
    # ours keeps E <= h where theirs keeps E < h: equal but for pixels exactly at a threshold
    assert (got != want).double().mean().item() <= 1e-3


def authors_loss(logits, target, gamma, beta, deeplab=False):
    """LSE.py's target loss: CE per valid pixel (fcn8s.py keeps them per pixel,
    deeplab.py averages first); focal factor (1 - exp(-CE))^gamma on that;
    beta * mean(focal) + mean(CE)."""
    logp = torch.log_softmax(logits.double(), 1)
    valid = target != 255
    ce = -logp.permute(0, 2, 3, 1)[valid].gather(1, target[valid][:, None]).squeeze(1)
    if deeplab:
        ce = ce.mean()
    focal = ce * (1 - torch.exp(-ce)) ** gamma
    return beta * focal.mean() + ce.mean()


@pytest.mark.parametrize("deeplab", [False, True], ids=["fcn8s", "deeplab"])
def test_lse_authors_loss(deeplab):
    g = torch.Generator().manual_seed(4)
    logits = (torch.randn(2, 5, 8, 12, generator=g) * 2).requires_grad_()
    target = torch.randint(0, 5, (2, 8, 12), generator=g)
    target[:, :2] = 255
    if deeplab:  # the focal factor on the batch-mean CE: from our plain mean CE
        ce = ops.focal_ce_loss(logits, target, beta=0.0)
        ours = ce + 0.1 * ce * (1 - torch.exp(-ce)) ** 3
    else:
        ours = ops.focal_ce_loss(logits, target, gamma=3.0, beta=0.1)
    d = logits.detach().double().requires_grad_()
    theirs = authors_loss(d, target, 3, 0.1, deeplab)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    (ga,) = torch.autograd.grad(ours, logits)
    (gb,) = torch.autograd.grad(theirs, d)
    torch.testing.assert_close(ga.double(), gb, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------- CRST / CBST
def cbst_thresholds(probs, portion, ds_rate=1):
    """crst_seg.py val + kc_parameters: per image, every ds_rate-th max-prob
    of each predicted class (raster order) kept in a list per class, sorted
    descending, threshold at position floor(n p) - 1, 1.0 where empty."""
    conf, label = probs.max(1)
    out = torch.ones(probs.shape[1], dtype=torch.float64)
    for k in range(probs.shape[1]):
        kept = torch.cat([conf[i][label[i] == k][0::ds_rate] for i in range(len(conf))])
        v = torch.sort(kept.double(), descending=True).values
        n = int(math.floor(v.numel() * portion))
        if n:
            out[k] = v[n - 1]
    return out


def cbst_labels(probs, thresholds):
    """crst_seg.py label_selection: argmax of p / t, 255 where its max < 1."""
    w = probs.double() / thresholds.view(1, -1, 1, 1)
    label = w.argmax(1)
    label[w.max(1).values < 1] = 255
    return label


@pytest.mark.parametrize("ds_rate", [1, 4])
def test_cbst_thresholds_from_the_summary(ds_rate):
    c, portion, bins = 5, 0.2, 4096
    logits = biased_logits(6, c, 16, 20, seed=5)
    summary = ScoreSummary(c, bins)
    for i in range(0, 6, 2):
        s = ops.score(logits[i:i + 2])
        summary.update(s, valid=class_subsample(s.label, ds_rate))  # CRST's --ds-rate (4 by default)
    ours = summary.class_balanced_thresholds(portion)
    probs = torch.softmax(logits, 1)
    exact = cbst_thresholds(probs, portion, ds_rate)
    assert bool(((exact - ours) >= 0).all()) and bool(((exact - ours) <= 1 / bins + 1e-9).all())
    # labels: equal with the exact thresholds; the summary's (lower) ones keep every pixel those keep
    assert torch.equal(class_balanced_pseudo_labels(probs.double(), exact), cbst_labels(probs, exact))
    approx = class_balanced_pseudo_labels(probs.double(), ours)
    assert bool(((cbst_labels(probs, exact) != 255) <= (approx != 255)).all())


def test_cbst_on_upsampled_logits():
    c, size = 5, (32, 40)
    low = biased_logits(2, c, 8, 10, seed=6)
    s = ops.score(low, size, align_corners=True)
    probs = torch.softmax(F.interpolate(low, size, mode="bilinear", align_corners=True), 1)  # their interp + Softmax2d
    conf, label = probs.max(1)
    torch.testing.assert_close(s.confidence, conf, atol=1e-5, rtol=0)
    assert (s.label != label).double().mean().item() <= 1e-3


# ---------------------------------------------------------------- ESL
def esl_thresholds(entropy, label, c, floor=0.1):
    """esl_UDA.py: per class the sorted entropies' element at round(n * 0.5)
    (numpy rounds half to even), 0 for an absent class, raised to 0.1."""
    out = []
    for k in range(c):
        x = torch.sort(entropy[label == k].double()).values
        out.append(x[round(x.numel() * 0.5)].item() if x.numel() else 0.0)
    out = torch.tensor(out, dtype=torch.float64)
    return torch.where(out < floor, torch.full_like(out, floor), out)


def test_esl_median_entropy_and_labels():
    c, bins = 5, 4096
    logits = biased_logits(4, c, 16, 20, seed=7)
    probs = torch.softmax(logits.double(), 1)
    ent = -(probs * torch.log(probs)).sum(1) / math.log(c)  # ESL's compute_entropy (no epsilon)
    label = probs.argmax(1)
    exact = esl_thresholds(ent, label, c)
    s = ops.score(logits)
    summary = ScoreSummary(c, bins).update(s)
    ours = summary.median_entropy(floor=0.1)
    assert bool(((exact - ours) >= 0).all()) and bool(((exact - ours) <= 1 / bins + 1e-9).all())
    # the labels: 255 where the entropy is above its class's threshold
    theirs = torch.where(ent > exact[label], torch.full_like(label, 255), label)
    got = torch.where(s.entropy.double() > exact[s.label], torch.full_like(s.label, 255), s.label)
    differ = got != theirs
    assert bool(((ent - exact[label]).abs()[differ] < 1e-5).all())  # only float rounding at a threshold


def test_esl_on_upsampled_probabilities():
    c, size = 5, (32, 40)
    low = torch.softmax(biased_logits(2, c, 8, 10, seed=8), 1)
    s = ops.score_probs(low, size, align_corners=True)
    up = F.interpolate(low, size, mode="bilinear", align_corners=True).double()  # their interp of the softmax
    ent = -(up * torch.log(up)).sum(1) / math.log(c)
    torch.testing.assert_close(s.entropy.double(), ent, atol=1e-5, rtol=0)
    torch.testing.assert_close(s.confidence.double(), up.max(1).values, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- DAFormer / MIC
def daformer_pseudo(low, size, threshold=0.968, top=0, bottom=0):
    """dacs.py: logits resized (bilinear, align_corners=False) to the image,
    softmax, max; weight = share of the batch's pixels with max-prob >= 0.968,
    broadcast per pixel; optional rows zeroed at the top / bottom."""
    p = torch.softmax(F.interpolate(low.double(), size, mode="bilinear", align_corners=False), 1)
    prob, label = p.max(1)
    share = (prob >= threshold).sum().item() / prob.numel()
    w = torch.full(prob.shape, share, dtype=torch.float64)
    if top:
        w[:, :top] = 0
    if bottom:
        w[:, -bottom:] = 0
    return label, w


def test_daformer_pseudo_label_and_weight():
    size = (32, 48)
    low = biased_logits(2, 6, 8, 12, seed=9, scale=5.0)
    s = ops.score(low, size)
    w = torch.full_like(s.confidence, confidence_share(s.confidence, 0.968).item())
    w[:, :3] = 0  # pseudo_weight_ignore_top=3
    label, want = daformer_pseudo(low, size, top=3)
    assert (s.label != label).double().mean().item() <= 1e-3
    assert 0 < want.max().item() < 1
    torch.testing.assert_close(w.double(), want, atol=2 / s.confidence.numel(), rtol=0)


def mmseg_weighted_ce(logits, target, seg_weight):
    """mmseg cross_entropy (reduction 'none', ignore_index 255), times the
    pixel weight, mean over ALL pixels (weight_reduce_loss, no avg_factor)."""
    logp = torch.log_softmax(logits.double(), 1)
    valid = target != 255
    ce = -logp.gather(1, torch.where(valid, target, 0)[:, None])[:, 0] * valid
    return (ce * seg_weight.double()).mean()


def test_daformer_weighted_loss():
    g = torch.Generator().manual_seed(10)
    logits = (torch.randn(2, 6, 8, 12, generator=g) * 2).requires_grad_()
    target = torch.randint(0, 6, (2, 8, 12), generator=g)
    target[:, -2:] = 255
    w = torch.rand(2, 8, 12, generator=g)
    ours = ops.focal_ce_loss(logits, target, beta=0.0, pixel_weight=w, reduction="mean_all")
    d = logits.detach().double().requires_grad_()
    theirs = mmseg_weighted_ce(d, target, w)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0].double(), torch.autograd.grad(theirs, d)[0],
                               atol=1e-6, rtol=1e-4)


def test_class_weighted_ce():
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(2, 6, 8, 12, generator=g)
    target = torch.randint(0, 6, (2, 8, 12), generator=g)
    target[:, :2] = 255
    weight = torch.rand(6, generator=g) + 0.5
    ours = ops.focal_ce_loss(logits, target, beta=0.0, weight=weight)
    logp = torch.log_softmax(logits.double(), 1).permute(0, 2, 3, 1)[target != 255]
    t = target[target != 255]
    wt = weight.double()[t]
    theirs = (-(logp.gather(1, t[:, None])[:, 0]) * wt).sum() / wt.sum()  # F.cross_entropy(weight=)'s mean
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


# ---------------------------------------------------------------- kornia
def test_kornia_focal_only():
    g = torch.Generator().manual_seed(12)
    n, c, h, w, gamma = 2, 5, 6, 8, 2.0
    logits = torch.randn(n, c, h, w, generator=g)
    target = torch.randint(0, c, (n, h, w), generator=g)
    ours = ops.focal_ce_loss(logits, target, gamma=gamma, beta=1.0, ce_weight=0.0, reduction="sum") / (c * n * h * w)
    logp = torch.log_softmax(logits.double(), 1)
    onehot = F.one_hot(target, c).permute(0, 3, 1, 2).double()
    theirs = (-onehot * (1 - logp.exp()) ** gamma * logp).mean()  # alpha=None, "mean" over N*C*H*W
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def corners_to_rows(corners, batch_index):
    """kornia crop_and_resize boxes [B, 4, 2] (x, y) of the top-left, top-right,
    bottom-right, bottom-left pixels (inclusive) -> our [B, 5] rows with
    exclusive ends."""
    x1, y1 = corners[:, 0, 0], corners[:, 0, 1]
    x2, y2 = corners[:, 2, 0] + 1, corners[:, 2, 1] + 1
    return torch.stack([batch_index.float(), x1, y1, x2, y2], 1)


def test_kornia_crop_and_resize_boxes():
    g = torch.Generator().manual_seed(13)
    img = torch.rand(2, 3, 20, 30, generator=g)
    corners = torch.tensor([[[2, 3], [17, 3], [17, 12], [2, 12]], [[0, 0], [29, 0], [29, 19], [0, 19]]],
                           dtype=torch.float32)
    rows = corners_to_rows(corners, torch.arange(2))
    got = ops.crop_resize(img, rows, (16, 24), align_corners=True)
    for j, b in enumerate(range(2)):
        x1, y1 = corners[j, 0].long().tolist()
        x2, y2 = corners[j, 2].long().tolist()
        # kornia maps the corner pixels onto the output's corner pixels: an
        # align_corners=True resize of the inclusive crop
        want = F.interpolate(img[b:b + 1, :, y1:y2 + 1, x1:x2 + 1], (16, 24), mode="bilinear", align_corners=True)
        torch.testing.assert_close(got[j:j + 1], want, atol=1e-6, rtol=0)
