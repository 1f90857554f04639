"""lse_fast.ops.score_probs (scores from probabilities) against a float64
computation with 0 log 0 = 0 and against its reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from lse_fast import ops, reference
from tests.conftest import requires_cuda
from tests.helpers import DTYPES, LAYOUTS, assert_close, make_layout

SHAPES = [(2, 19, 9, 13), (1, 2, 5, 300), (2, 1, 3, 4), (1, 7, 1, 1)]
UPSAMPLE_CASES = [((1, 19, 13, 17), (104, 136)), ((2, 5, 7, 9), (23, 31)), ((1, 3, 1, 1), (5, 4)),
                  ((2, 4, 9, 11), (9, 11)), ((1, 6, 20, 24), (7, 5))]


def random_probs(shape, dtype, zeros=0.3, seed=0):
    """Softmax outputs with a share of exact zeros (saturated classes), in
    `dtype`; one class per pixel stays nonzero."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3
    mask = torch.rand(shape, generator=g) < zeros
    keep = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g)
    mask.scatter_(1, keep, False)
    return torch.softmax(x.masked_fill(mask, float("-inf")), 1).to(dtype)


def truth(p):
    """float64: max, first argmax, -sum p log p / log C with 0 log 0 = 0."""
    p = p.double()
    c = p.shape[1]
    conf, label = p.max(1)
    h = -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(1)
    return conf, label, (h / math.log(c) if c > 1 else torch.zeros_like(h)).clamp(0, 1)


def near_tie(p64, margin=1e-6):
    if p64.shape[1] < 2:
        return torch.zeros_like(p64[:, 0], dtype=torch.bool)
    top = p64.topk(2, dim=1).values
    return (top[:, 0] - top[:, 1]) < margin


def check(got, p64, conf_tol=1e-6, ent_tol=2e-6, margin=1e-6):
    conf, label, ent = truth(p64)
    ties = near_tie(p64, margin)
    assert torch.isfinite(got.confidence).all() and torch.isfinite(got.entropy).all()
    assert torch.equal(got.label[~ties], label[~ties])
    assert_close(got.confidence, conf.float(), atol=conf_tol, name="confidence")
    assert_close(got.entropy, ent.float(), atol=ent_tol, name="entropy")
    n, c = got.class_pixels.shape
    if not ties.any():
        flat = label.reshape(n, -1)
        pixels = torch.zeros(n, c, dtype=torch.int64).scatter_add_(1, flat, torch.ones_like(flat))
        assert torch.equal(got.class_pixels, pixels)
        sums = torch.zeros(n, c, dtype=torch.float64).scatter_add_(1, flat, ent.reshape(n, -1))
        assert_close(got.class_entropy, sums.float(), atol=1e-5, rtol=1e-5, name="class_entropy")
        sums = torch.zeros(n, c, dtype=torch.float64).scatter_add_(1, flat, conf.reshape(n, -1))
        assert_close(got.class_confidence, sums.float(), atol=1e-5, rtol=1e-5, name="class_confidence")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_float64_with_zero_probabilities(shape, dtype, layout):
    p = random_probs(shape, dtype, seed=shape[1])
    assert (p == 0).any() or shape[1] == 1
    got = ops.score_probs(make_layout(p, layout))
    check(got, p)
    ref = reference.score_probs(p)
    assert torch.equal(ref.label, got.label)
    assert_close(got.entropy, ref.entropy, atol=2e-6, name="entropy vs reference")
    assert_close(got.class_entropy, ref.class_entropy, atol=1e-5, rtol=1e-5, name="class_entropy vs reference")


def test_equals_score_of_the_logits():
    x = torch.randn(2, 19, 16, 24) * 3
    a, b = ops.score_probs(torch.softmax(x, 1)), ops.score(x)
    assert torch.equal(a.label, b.label)
    assert_close(a.confidence, b.confidence, atol=1e-6, name="confidence")
    assert_close(a.entropy, b.entropy, atol=3e-6, name="entropy")


def test_nan_and_inf_probabilities():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, float("nan"), 0.8], [0.0, float("inf"), 0.0]])
    s = ops.score_probs(p.T.reshape(1, 3, 1, 4).contiguous())
    assert s.confidence[0, 0, :2].tolist() == [1.0, 0.5] and s.label[0, 0, :2].tolist() == [0, 0]
    assert s.entropy[0, 0, 0].item() == 0.0
    assert s.entropy[0, 0, 1].item() == pytest.approx(math.log(2) / math.log(3), abs=1e-6)
    assert torch.isnan(s.confidence[0, 0, 2:]).all() and torch.isnan(s.entropy[0, 0, 2:]).all()
    ref = reference.score_probs(p.T.reshape(1, 3, 1, 4))
    assert torch.isnan(ref.confidence[0, 0, 2:]).all() and torch.isnan(ref.entropy[0, 0, 2:]).all()


@pytest.mark.parametrize("shape,size", UPSAMPLE_CASES, ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_upsampled_matches_interpolated_probabilities(shape, size, dtype, layout, align_corners):
    p = random_probs(shape, dtype, seed=shape[1])
    got = ops.score_probs(make_layout(p, layout), size=size, align_corners=align_corners)
    up = F.interpolate(p.double(), size, mode="bilinear", align_corners=align_corners)
    # Non-power-of-two scales are rounded to float32 (as F.interpolate's
    # float32 kernel rounds them): source coordinates carry ~1e-7 relative
    # error, hence the looser bound against float64 than against the float32
    # reference, which takes the same taps.
    check(got, up, conf_tol=2e-5, ent_tol=4e-5, margin=1e-4)
    ref = reference.score_probs(p, size=size, align_corners=align_corners)
    assert_close(got.confidence, ref.confidence, atol=2e-6, name="confidence vs float32 reference")
    assert_close(got.entropy, ref.entropy, atol=4e-6, name="entropy vs float32 reference")


def test_opcheck_and_compile():
    p = random_probs((2, 5, 6, 7), torch.float32)
    torch.library.opcheck(torch.ops.lse_fast.score_probs.default, (p,))
    torch.library.opcheck(torch.ops.lse_fast.score_probs.default, (p.contiguous(memory_format=torch.channels_last),))
    torch.library.opcheck(torch.ops.lse_fast.score_probs_upsampled.default, (p, [13, 9], False))
    torch.library.opcheck(torch.ops.lse_fast.score_probs_upsampled.default, (p.half(), [13, 9], True))
    f = torch.compile(lambda z: ops.score_probs(z, size=(13, 9), align_corners=True).class_pixels, fullgraph=True)
    assert torch.equal(f(p), ops.score_probs(p, size=(13, 9), align_corners=True).class_pixels)


def test_empty_and_bad_input():
    s = ops.score_probs(torch.rand(0, 3, 4, 5), size=(8, 10))
    assert s.confidence.shape == (0, 8, 10) and s.class_pixels.shape == (0, 3)
    with pytest.raises(RuntimeError, match=r"score_probs: `probs` must be float32, float16 or bfloat16, got torch.float64"):
        ops.score_probs(torch.rand(1, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"score_probs: `align_corners` must be a bool"):
        ops.score_probs(torch.rand(1, 3, 4, 4), size=(8, 8), align_corners="yes")


def test_not_differentiable():
    p = random_probs((1, 3, 4, 5), torch.float32).requires_grad_()
    s = ops.score_probs(p)
    assert not s.confidence.requires_grad and not s.entropy.requires_grad


@requires_cuda
@pytest.mark.parametrize("shape,size", UPSAMPLE_CASES, ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_cpu(shape, size, dtype):
    p = random_probs(shape, dtype, seed=3)
    for kw in ({}, {"size": size}, {"size": size, "align_corners": True}):
        got, want = ops.score_probs(p.cuda(), **kw), ops.score_probs(p, **kw)
        assert torch.equal(got.label.cpu(), want.label)
        assert_close(got.confidence, want.confidence, atol=1e-6, name="confidence")
        assert_close(got.entropy, want.entropy, atol=2e-6, name="entropy")
        assert_close(got.class_entropy, want.class_entropy, atol=1e-4, rtol=1e-5, name="class_entropy")
