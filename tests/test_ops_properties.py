"""Property-based tests (hypothesis) of every op against its reference
(issue 15): random shapes, strides (layouts), dtypes, box positions,
thresholds, gammas. Derandomised with a fixed example budget, so CI is
deterministic and the file runs in well under a minute on 2 cores.

Tolerances are those of the per-op tests, which derive them: float32 math
against float64 truth, plus one rounding to the output dtype.
"""

import math

import pytest
import torch
import torch.nn.functional as F

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings
from hypothesis import strategies as st

from lse_fast import ops, reference
from tests.helpers import assert_close, make_layout

PROPERTY = settings(max_examples=15, derandomize=True, deadline=None, database=None)
FLOAT_DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])
LAYOUTS = st.sampled_from(["contiguous", "channels_last", "sliced", "transposed"])


def tensor(seed, shape, dtype=torch.float32, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def near_tie(x64, margin):
    if x64.shape[1] < 2:
        return torch.zeros_like(x64[:, 0], dtype=torch.bool)
    top = x64.topk(2, dim=1).values
    return (top[:, 0] - top[:, 1]) < margin


shapes = st.tuples(st.integers(1, 3), st.integers(1, 21), st.integers(1, 19), st.integers(1, 37))


@PROPERTY
@given(shape=shapes, dtype=FLOAT_DTYPES, layout=LAYOUTS, seed=st.integers(0, 2**31))
def test_score_property(shape, dtype, layout, seed):
    x = tensor(seed, shape, dtype)
    got = ops.score(make_layout(x, layout))
    want = reference.score(x.double())
    assert torch.equal(got.label, want.label)  # argmax of the stored values is exact
    assert torch.equal(got.class_pixels, want.class_pixels)
    assert_close(got.confidence, want.confidence, atol=1e-6, name="confidence")
    assert_close(got.entropy, want.entropy, atol=2e-6, name="entropy")
    assert_close(got.class_confidence, want.class_confidence, atol=1e-5, rtol=1e-5, name="class_confidence")


@PROPERTY
@given(
    shape=st.tuples(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9), st.integers(1, 11)),
    out=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    dtype=FLOAT_DTYPES,
    layout=LAYOUTS,
    seed=st.integers(0, 2**31),
)
@pytest.mark.parametrize("align_corners", [False, True])
def test_score_upsampled_property(align_corners, shape, out, dtype, layout, seed):
    x = tensor(seed, shape, dtype)
    got = ops.score(make_layout(x, layout), size=out, align_corners=align_corners)
    want = reference.score(x.double(), size=out, align_corners=align_corners)
    up = F.interpolate(x.double(), size=out, mode="bilinear", align_corners=align_corners)
    ties = near_tie(up, 1e-4)
    assert torch.equal(got.label[~ties], want.label[~ties])
    assert_close(got.confidence, want.confidence, atol=2e-6, name="confidence")
    assert_close(got.entropy, want.entropy, atol=4e-6, name="entropy")


@PROPERTY
@given(
    shape=st.tuples(st.integers(1, 2), st.integers(1, 12), st.integers(1, 9), st.integers(1, 33)),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    layout=LAYOUTS,
    gamma=st.floats(0.0, 4.0),
    beta=st.floats(0.0, 2.0),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    ignore_share=st.floats(0.0, 1.0),
    uint8_target=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_focal_property(shape, dtype, layout, gamma, beta, reduction, ignore_share, uint8_target, seed):
    n, c, h, w = shape
    x = tensor(seed, shape, dtype)
    g = torch.Generator().manual_seed(seed + 1)
    t = torch.randint(0, c, (n, h, w), generator=g)
    t[torch.rand(n, h, w, generator=g) < ignore_share] = 255
    t = t.to(torch.uint8 if uint8_target else torch.int64)
    a = make_layout(x, layout).detach().requires_grad_()
    loss = ops.focal_ce_loss(a, t, gamma=gamma, beta=beta, reduction=reduction)
    loss.sum().backward()
    b = x.double().requires_grad_()
    want = reference.focal_ce_loss(b, t, gamma=gamma, beta=beta, reduction=reduction)
    want.sum().backward()
    tol = 1e-12 if dtype == torch.float64 else 4e-6
    assert_close(loss, want, atol=tol, rtol=tol, name="loss")
    # Where p_t rounds to 1 with gamma < 1, autograd of the reference's
    # (1 - p_t)^gamma gives 0 * inf = NaN; the op uses the exact limit (a
    # finite gradient). Finite logits must always give a finite gradient.
    assert torch.isfinite(a.grad).all()
    limit = torch.isnan(b.grad)
    want_grad = torch.where(limit, a.grad.double().detach(), b.grad)
    rel = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2**-7}[dtype]
    scale = max(want_grad.abs().max().item(), 1e-30)
    assert_close(a.grad, want_grad, atol=max(rel, 1e-6) * scale, rtol=rel, name="grad")


def boxes_strategy(n, h, w, k_max=4):
    """Fractional boxes inside an n x h x w batch."""

    def make(draw_values):
        rows = []
        for b, fx1, fx2, fy1, fy2 in draw_values:
            x1, x2 = sorted((fx1 * w, fx2 * w))
            y1, y2 = sorted((fy1 * h, fy2 * h))
            x2, y2 = max(x2, x1 + 0.25), max(y2, y1 + 0.25)
            if x2 > w:
                x1, x2 = w - (x2 - x1), w
            if y2 > h:
                y1, y2 = h - (y2 - y1), h
            rows.append([b % n, max(x1, 0.0), max(y1, 0.0), x2, y2])
        return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)

    unit = st.floats(0.0, 1.0)
    row = st.tuples(st.integers(0, 7), unit, unit, unit, unit)
    return st.lists(row, min_size=0, max_size=k_max).map(make)


@PROPERTY
@given(data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
       layout=LAYOUTS, align_corners=st.booleans(), seed=st.integers(0, 2**31))
def test_crop_resize_bilinear_property(data, dtype, layout, align_corners, seed):
    n, c = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 4))
    h, w = data.draw(st.integers(1, 17)), data.draw(st.integers(1, 17))
    size = data.draw(st.tuples(st.integers(1, 13), st.integers(1, 13)))
    boxes = data.draw(boxes_strategy(n, h, w))
    x = tensor(seed, (n, c, h, w), dtype)
    got = ops.crop_resize(make_layout(x, layout), boxes, size, align_corners=align_corners)
    want = reference.crop_resize(x.double(), boxes, size, align_corners=align_corners)
    # float32 blend of |x| <= ~15 against float64, then one rounding to the dtype.
    eps = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    assert got.dtype == dtype and got.shape == want.shape
    assert_close(got, want, atol=eps * 16, rtol=eps, name="crop")


@PROPERTY
@given(data=st.data(), dtype=st.sampled_from([torch.uint8, torch.bool, torch.int64, torch.float32]),
       seed=st.integers(0, 2**31))
def test_crop_resize_nearest_property(data, dtype, seed):
    n, h, w = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 15)), data.draw(st.integers(1, 15))
    size = data.draw(st.tuples(st.integers(1, 11), st.integers(1, 11)))
    boxes = data.draw(boxes_strategy(n, h, w))
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 200, (n, h, w), generator=g).to(dtype)
    got = ops.crop_resize(x, boxes, size, mode="nearest")
    assert torch.equal(got, reference.crop_resize(x, boxes, size, mode="nearest"))  # a copy: exact


def mix_neg_inf(x, seed, share):
    """A share of the logits set to -inf; some pixels keep no finite class."""
    g = torch.Generator().manual_seed(seed + 1)
    return x.masked_fill(torch.rand(x.shape, generator=g) < share, float("-inf"))


def softmax_stats64(x):
    """float64 softmax statistics with 0 log 0 = 0 (NaN where softmax is)."""
    x = x.double()
    p = torch.softmax(x, 1)
    c = x.shape[1]
    h = -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(1)
    return p.max(1).values, p.argmax(1), h / math.log(c) if c > 1 else h * 0


@PROPERTY
@given(shape=shapes, dtype=FLOAT_DTYPES, layout=LAYOUTS, share=st.sampled_from([0.1, 0.5, 0.9]),
       seed=st.integers(0, 2**31))
def test_score_neg_inf_property(shape, dtype, layout, share, seed):
    x = mix_neg_inf(tensor(seed, shape, dtype), seed, share)
    got = ops.score(make_layout(x, layout))
    conf, label, ent = softmax_stats64(x)
    dead = torch.isneginf(x).all(1)  # every class -inf: NaN, as softmax
    assert torch.equal(torch.isnan(got.confidence), dead) and torch.equal(torch.isnan(got.entropy), dead)
    assert torch.equal(got.label[~dead], label[~dead])
    assert_close(got.confidence[~dead], conf[~dead].float(), atol=1e-6, name="confidence")
    assert_close(got.entropy[~dead], ent[~dead].float(), atol=2e-6, name="entropy")
    want = reference.score(x.double())
    assert torch.equal(torch.isnan(want.entropy), dead)
    assert_close(got.entropy[~dead], want.entropy[~dead], atol=2e-6, name="entropy vs reference")


@PROPERTY
@given(
    shape=st.tuples(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9), st.integers(1, 11)),
    out=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    dtype=FLOAT_DTYPES,
    layout=LAYOUTS,
    align_corners=st.booleans(),
    zeros=st.sampled_from([0.0, 0.3, 0.7]),
    seed=st.integers(0, 2**31),
)
def test_score_probs_property(shape, out, dtype, layout, align_corners, zeros, seed):
    # Softmax outputs with exact zeros (saturated classes), direct and upsampled.
    x = tensor(seed, shape)
    g = torch.Generator().manual_seed(seed + 2)
    x = x.masked_fill(torch.rand(shape, generator=g) < zeros, float("-inf"))
    x[:, :1] = x[:, :1].nan_to_num(neginf=0.0)  # every pixel keeps class 0 finite
    p = torch.softmax(x, 1).to(dtype)
    for size in (None, out):
        got = ops.score_probs(make_layout(p, layout), size, align_corners=align_corners)
        q = p.double() if size is None else F.interpolate(p.double(), size, mode="bilinear", align_corners=align_corners)
        h = -torch.where(q > 0, q * torch.log(q), torch.zeros_like(q)).sum(1)
        ent = h / math.log(shape[1]) if shape[1] > 1 else h * 0
        ties = near_tie(q, 1e-6)
        assert torch.isfinite(got.entropy).all()
        assert torch.equal(got.label[~ties], q.argmax(1)[~ties])
        assert_close(got.confidence, q.max(1).values.float(), atol=1e-6, name="confidence")
        assert_close(got.entropy, ent.clamp(0, 1).float(), atol=4e-6, name="entropy")


@PROPERTY
@given(
    shape=st.tuples(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9), st.integers(1, 11)),
    out=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    dtype=FLOAT_DTYPES,
    layout=LAYOUTS,
    align_corners=st.booleans(),
    share=st.sampled_from([0.1, 0.5, 0.9]),
    seed=st.integers(0, 2**31),
)
def test_score_upsampled_neg_inf_property(shape, out, dtype, layout, align_corners, share, seed):
    # -inf logits anywhere (borders, clamped and exact taps included): a tap
    # of weight 0 adds nothing, a tap of weight > 0 makes the upsampled logit
    # -inf (p = 0). The truth: float64 softmax statistics (0 log 0 = 0) of
    # the reference's upsampling with the op's float32 taps; NaN exactly
    # where every upsampled logit is -inf.
    x = mix_neg_inf(tensor(seed, shape, dtype), seed, share)
    got = ops.score(make_layout(x, layout), size=out, align_corners=align_corners)
    up = reference.upsample_bilinear(x.float(), out, align_corners=align_corners)
    assert not torch.isnan(up).any()
    conf, label, ent = softmax_stats64(up)
    dead = torch.isneginf(up).all(1)
    assert torch.equal(torch.isnan(got.confidence), dead) and torch.equal(torch.isnan(got.entropy), dead)
    ties = near_tie(up.double().nan_to_num(neginf=-1e30), 1e-4)
    assert torch.equal(got.label[~dead & ~ties], label[~dead & ~ties])
    assert_close(got.confidence[~dead], conf[~dead].float(), atol=2e-6, name="confidence")
    assert_close(got.entropy[~dead], ent[~dead].float(), atol=4e-6, name="entropy")
    want = reference.score(x, size=out, align_corners=align_corners)
    assert torch.equal(torch.isnan(want.entropy), dead)


@PROPERTY
@given(data=st.data(), seed=st.integers(0, 2**31))
def test_crop_pseudo_labels_property(data, seed):
    n, c = data.draw(st.integers(1, 2)), data.draw(st.integers(2, 7))
    h, w = data.draw(st.integers(2, 9)), data.draw(st.integers(2, 9))
    factor = data.draw(st.sampled_from([1, 2, 3]))
    H, W = h * factor, w * factor
    size = data.draw(st.tuples(st.integers(1, 12), st.integers(1, 12)))
    boxes = data.draw(boxes_strategy(n, H, W, k_max=3))
    thresholds = torch.tensor(data.draw(st.lists(st.floats(0.0, 1.0), min_size=c, max_size=c)), dtype=torch.float32)
    probs = torch.softmax(tensor(seed, (n, c, h, w)), 1)
    # Some maps hold NaN or inf probabilities: pixels whose resampled
    # probabilities are not finite are ignored, by the op and the reference.
    bad = data.draw(st.sampled_from([None, None, float("nan"), float("inf")]))
    if bad is not None:
        g = torch.Generator().manual_seed(seed + 3)
        probs = probs.masked_fill(torch.rand(probs.shape, generator=g) < 0.05, bad)
    align = data.draw(st.booleans())
    got = ops.crop_pseudo_labels(probs, boxes, size, thresholds, image_size=(H, W), align_corners=align)
    want = reference.crop_pseudo_labels(probs, boxes, size, thresholds, image_size=(H, W), align_corners=align)
    # Float near-ties (argmax or entropy within rounding of a threshold) may
    # differ; they are rare: at most 2% of the pixels (documented in the op).
    differ = (got != want).float().mean().item() if got.numel() else 0.0
    assert differ <= 0.02, f"{differ:.3%} of pseudo-labels differ"
