"""Bounded per-class summaries (lse_fast.stats) against exact float64 sorting."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lse_fast
from lse_fast.stats import ScoreSummary, class_balanced_pseudo_labels, confidence_share


class Maps:
    """A stand-in for lse_fast.ops.Scores holding only the per-pixel maps."""

    def __init__(self, confidence, entropy, label):
        self.confidence, self.entropy, self.label = confidence, entropy, label


def exact_sorted(values, label, c):
    """The float64 values of class c, sorted ascending (the keep-everything way)."""
    return torch.sort(values.double()[label == c]).values


@st.composite
def maps(draw):
    c = draw(st.integers(1, 5))
    n = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=g)
    ent = torch.rand(n, generator=g)
    if draw(st.booleans()):  # ties and the ends of [0, 1]
        grid = torch.tensor([0.0, 0.25, 0.5, 1.0])
        pick = torch.randint(0, 4, (n,), generator=g)
        conf = torch.where(torch.rand(n, generator=g) < 0.5, grid[pick], conf)
    label = torch.randint(0, c, (n,), generator=g)
    bins = draw(st.sampled_from([1, 3, 16, 1000, 2048]))
    return c, bins, conf.view(1, 1, n), ent.view(1, 1, n), label.view(1, 1, n)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(maps(), st.floats(0.0, 1.0), st.integers(1, 3))
def test_order_statistics_within_one_bin_of_exact_sorting(m, portion, split):
    c, bins, conf, ent, label = m
    s = ScoreSummary(c, bins)
    # fed in `split` batches: the result does not depend on the batching
    for part in torch.tensor_split(torch.arange(conf.shape[-1]), split):
        s.update(Maps(conf[..., part], ent[..., part], label[..., part]))
    width = 1.0 / bins + 1e-12  # one bin width (plus the rounding of 1 - j / bins)
    cbst = s.class_balanced_thresholds(portion)
    esl = s.median_entropy(floor=0.1)
    for k in range(c):
        cs, es = exact_sorted(conf, label, k), exact_sorted(ent, label, k)
        n = cs.numel()
        assert int(s.pixels[k]) == n
        # CBST: the floor(n p)-th largest confidence, 1.0 where that is 0
        kk = math.floor(n * portion)
        if kk == 0:
            assert cbst[k].item() == 1.0
        else:
            exact = cs.flip(0)[kk - 1].item()
            assert 0.0 <= exact - cbst[k].item() <= width
        # ESL: the entropy at sorted position round(n / 2), floored at 0.1
        exact = max(es[round(n / 2)].item(), 0.1) if n else 0.1
        assert 0.0 <= exact - esl[k].item() <= width
        # every order statistic, both ways
        for i in (sorted({0, n // 3, n // 2, n - 1}) if n else []):
            assert 0.0 <= cs[i].item() - s.kth_smallest("confidence", i)[k].item() <= width
        if n:
            assert 0.0 <= cs[-1].item() - s.kth_largest("confidence", 1)[k].item() <= width


def test_exact_for_values_on_the_bin_grid():
    bins = 8
    g = torch.Generator().manual_seed(0)
    conf = torch.randint(0, bins, (1, 50, 40), generator=g).float() / bins
    label = torch.randint(0, 3, (1, 50, 40), generator=g)
    s = ScoreSummary(3, bins).update(Maps(conf, conf, label))
    for k in range(3):
        cs = exact_sorted(conf, label, k)
        got = s.kth_smallest("confidence", torch.arange(3) * 0 + cs.numel() // 3)[k].item()
        assert got == cs[cs.numel() // 3].item()


def test_from_the_fused_scores_and_cuda_agree():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 33, 47, generator=g) * 3
    sc = lse_fast.ops.score(logits)
    s = ScoreSummary(6, 4096).update(sc)
    assert torch.equal(s.pixels, sc.class_pixels.sum(0))
    for k in range(6):
        exact = exact_sorted(sc.confidence, sc.label, k)
        if exact.numel():
            assert 0 <= exact[-1].item() - s.kth_largest("confidence", 1)[k].item() <= 1 / 4096
    if torch.cuda.is_available():
        d = ScoreSummary(6, 4096).update(lse_fast.ops.score(logits.cuda()))
        assert d.confidence.is_cuda
        assert torch.equal(d.pixels, s.pixels)


def test_valid_mask_nan_and_merge():
    conf = torch.tensor([[[0.875, 0.75, float("nan"), 0.625]]])  # multiples of 1/8: exact with 8 bins
    ent = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])
    label = torch.tensor([[[0, 0, 1, 1]]])
    s = ScoreSummary(3, 8).update(Maps(conf, ent, label))
    assert s.nan_pixels.tolist() == [0, 1, 0]
    assert s.pixels.tolist() == [2, 2, 0]
    cb = s.class_balanced_thresholds(0.5)
    assert cb[0].item() == 0.875 and math.isnan(cb[1].item()) and cb[2].item() == 1.0
    med = s.median_entropy()
    assert math.isnan(med[1].item()) and med[2].item() == 0.1  # NaN stays NaN; empty class -> floor
    masked = ScoreSummary(3, 8).update(Maps(conf, ent, label), valid=torch.tensor([[[True, False, False, True]]]))
    assert masked.pixels.tolist() == [1, 1, 0] and masked.nan_pixels.sum() == 0
    merged = ScoreSummary(3, 8).merge(masked).merge(masked)
    assert merged.pixels.tolist() == [2, 2, 0]
    assert masked.share_at_least("confidence", 7).tolist()[:2] == [1.0, 0.0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        ScoreSummary(0)
    with pytest.raises(ValueError, match="bins"):
        ScoreSummary(3, 0)
    s = ScoreSummary(2, 4)
    x = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="label"):
        s.update(Maps(x, x, torch.full((1, 2, 2), 2)))
    with pytest.raises(ValueError, match="one shape"):
        s.update(Maps(x, x[:, :1], torch.zeros(1, 2, 2, dtype=torch.int64)))
    with pytest.raises(ValueError, match="valid"):
        s.update(Maps(x, x, torch.zeros(1, 2, 2, dtype=torch.int64)), valid=torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="kind"):
        s.kth_largest("prob", 1)
    with pytest.raises(ValueError, match="portion"):
        s.class_balanced_thresholds(1.5)
    with pytest.raises(ValueError, match="merge"):
        s.merge(ScoreSummary(2, 8))
    with pytest.raises(ValueError, match="confidence"):
        confidence_share(torch.zeros(2, 2), 0.9)


def test_confidence_share_and_class_balanced_labels():
    conf = torch.tensor([[[0.99, 0.5], [0.97, 0.1]], [[0.2, 0.2], [0.2, 0.968]]])
    assert confidence_share(conf, 0.968).item() == pytest.approx(3 / 8)
    assert confidence_share(conf, 0.968, per_image=True).tolist() == pytest.approx([0.5, 0.25])
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.4, 0.35, 0.25]]).T.reshape(1, 3, 1, 3)
    thr = torch.tensor([0.7, 0.4, 0.2])
    # pixel 0: 0.6/0.7=.86, .3/.4=.75, .1/.2=.5 -> max < 1 -> ignored
    # pixel 1: .2/.7, .5/.4=1.25, .3/.2=1.5 -> class 2
    # pixel 2: .4/.7, .35/.4=.875, .25/.2=1.25 -> class 2
    assert class_balanced_pseudo_labels(probs, thr).tolist() == [[[255, 2, 2]]]


def test_class_subsample_is_crst_ds_rate():
    g = torch.Generator().manual_seed(5)
    label = torch.randint(0, 4, (2, 9, 13), generator=g)
    conf = torch.rand(2, 9, 13, generator=g)
    for every in (1, 4, 7):
        mask = lse_fast.stats.class_subsample(label, every)
        for i in range(2):
            for c in range(4):
                theirs = conf[i][label[i] == c][0::every]  # crst_seg.py: conf_cls_temp[0:len:ds_rate]
                ours = conf[i][(label[i] == c) & mask[i]]
                assert torch.equal(ours, theirs)
    with pytest.raises(ValueError, match="every"):
        lse_fast.stats.class_subsample(label, 0)
