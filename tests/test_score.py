"""lse_fast.ops.score against its reference and a float64 computation."""

import math

import pytest
import torch
import torch.nn.functional as F

import lse_fast
from lse_fast import ops, reference
from tests.conftest import requires_cuda
from tests.helpers import DTYPES, LAYOUTS, SCORE_TOL, assert_close, make_layout

SHAPES = [(1, 19, 97, 131), (3, 16, 59, 1025), (2, 1, 7, 9), (2, 2, 33, 17), (1, 19, 1, 1), (4, 5, 3, 300)]


def truth(logits):
    """float64 reference on exactly the values the op sees."""
    return reference.score(logits.double())


def check_against_truth(got, want, dtype):
    tol = SCORE_TOL[dtype]
    assert got.confidence.dtype == torch.float32 and got.entropy.dtype == torch.float32
    assert got.label.dtype == torch.int64 and got.class_pixels.dtype == torch.int64
    assert got.class_confidence.dtype == torch.float32 and got.class_entropy.dtype == torch.float32
    assert got.confidence.is_contiguous() and got.label.is_contiguous() and got.entropy.is_contiguous()
    assert torch.equal(got.label.cpu(), want.label.cpu()), "label differs from the float64 argmax"
    assert_close(got.confidence, want.confidence, atol=tol["confidence"], name="confidence")
    assert_close(got.entropy, want.entropy, atol=tol["entropy"], name="entropy")
    assert torch.equal(got.class_pixels.cpu(), want.class_pixels.cpu()), "class_pixels"
    assert_close(got.class_confidence, want.class_confidence, atol=1e-5, rtol=tol["class_rtol"], name="class_confidence")
    assert_close(got.class_entropy, want.class_entropy, atol=1e-5, rtol=tol["class_rtol"], name="class_entropy")


def random_logits(shape, dtype, scale=4.0):
    return (torch.randn(shape) * scale).to(dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_float64(shape, dtype, layout):
    x = random_logits(shape, dtype)
    got = ops.score(make_layout(x, layout))
    check_against_truth(got, truth(x), dtype)


@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(shape):
    x = random_logits(shape, torch.float32)
    got, ref = ops.score(x), reference.score(x)
    assert torch.equal(got.label, ref.label)
    assert torch.equal(got.class_pixels, ref.class_pixels)
    for field in ("confidence", "entropy"):
        assert_close(getattr(got, field), getattr(ref, field), atol=2e-6, name=field)
    for field in ("class_confidence", "class_entropy"):
        assert_close(getattr(got, field), getattr(ref, field), atol=1e-4, rtol=1e-5, name=field)


def test_paper_shape_class_sums_within_1e5_of_float64():
    # One image of the paper's resolution: per-class sums over up to 512K pixels.
    x = random_logits((1, 19, 512, 1024), torch.float32, scale=3.0)
    got, want = ops.score(x), truth(x)
    assert torch.equal(got.class_pixels, want.class_pixels)
    assert_close(got.class_confidence, want.class_confidence, rtol=1e-5, name="class_confidence")
    assert_close(got.class_entropy, want.class_entropy, rtol=1e-5, name="class_entropy")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_error_within_twice_torch_own(dtype):
    """Against float64 truth on the same half inputs, the fused op may err at
    most 2x as much as PyTorch computing the same scores in half precision."""
    x = random_logits((2, 19, 64, 96), dtype)
    want = truth(x)
    got = ops.score(x)
    log_p = torch.log_softmax(x, dim=1)  # computed in `dtype`
    p = log_p.exp()
    torch_conf = p.amax(dim=1).double()
    torch_ent = (-(p * log_p).sum(dim=1) / math.log(19)).double()
    for name, ours, theirs in (
        ("confidence", got.confidence, torch_conf),
        ("entropy", got.entropy, torch_ent),
    ):
        ours_err = (ours.double() - getattr(want, name)).abs().max().item()
        torch_err = (theirs - getattr(want, name)).abs().max().item()
        assert ours_err <= 2 * torch_err, f"{name}: fused error {ours_err:.3g} > 2 x torch {dtype} error {torch_err:.3g}"


def test_ties_take_lowest_class():
    x = torch.zeros(1, 6, 2, 3)
    x[0, 2, 0, 0] = x[0, 4, 0, 0] = 5.0  # tie between 2 and 4
    x[0, :, 1, :] = 1.5  # all equal
    s = ops.score(x)
    assert s.label[0, 0, 0] == 2
    assert torch.all(s.label[0, 1] == 0)
    assert_close(s.confidence[0, 1], torch.full((3,), 1 / 6), atol=1e-7, name="uniform confidence")
    assert_close(s.entropy[0, 1], torch.ones(3), atol=1e-6, name="uniform entropy")
    assert s.class_pixels[0].tolist() == [3 + 2, 0, 1, 0, 0, 0]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_extreme_logits_stay_finite(dtype):
    # +-1e4 (bf16 and fp16 round these slightly; fp16 max is 65504).
    vals = torch.tensor([-1e4, 1e4, 0.0, 1e4, -1e4, 3.0, -3.0])
    x = vals[torch.randint(0, len(vals), (2, 19, 17, 23))].to(dtype)
    s = ops.score(x)
    for field in s._fields:
        assert torch.isfinite(getattr(s, field).double()).all(), field
    check_against_truth(s, truth(x), dtype)
    one_hot = torch.full((1, 4, 1, 1), -1e4)
    one_hot[0, 3] = 1e4
    s = ops.score(one_hot)
    assert s.label.item() == 3 and s.confidence.item() == 1.0 and s.entropy.item() == 0.0


def test_single_class():
    x = torch.randn(2, 1, 5, 7)
    s = ops.score(x)
    assert torch.all(s.label == 0)
    assert torch.all(s.confidence == 1.0) and torch.all(s.entropy == 0.0)
    assert s.class_pixels.tolist() == [[35], [35]]
    assert s.class_confidence.tolist() == [[35.0], [35.0]]


def test_entropy_normalised_to_unit_interval():
    x = random_logits((2, 19, 31, 37), torch.float32, scale=0.01)  # nearly uniform
    s = ops.score(x)
    assert s.entropy.min() >= 0.0 and s.entropy.max() <= 1.0
    assert s.entropy.min() > 0.99


def test_nan_logits_propagate():
    x = torch.randn(1, 4, 2, 2)
    x[0, 1, 0, 0] = float("nan")
    s = ops.score(x)
    assert math.isnan(s.confidence[0, 0, 0].item()) and math.isnan(s.entropy[0, 0, 0].item())
    assert torch.isfinite(s.confidence[0].flatten()[1:]).all()


@pytest.mark.parametrize("shape", [(0, 19, 8, 8), (2, 19, 0, 8), (2, 3, 4, 0)])
def test_empty(shape):
    s = ops.score(torch.randn(shape))
    n, c, h, w = shape
    assert s.confidence.shape == (n, h, w) and s.label.shape == (n, h, w)
    assert s.class_pixels.shape == (n, c) and torch.all(s.class_pixels == 0)
    assert torch.all(s.class_confidence == 0) and torch.all(s.class_entropy == 0)


def test_independent_of_thread_count():
    x = random_logits((2, 19, 61, 517), torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.score(x)
        torch.set_num_threads(max(2, threads))
        many = ops.score(x)
    finally:
        torch.set_num_threads(threads)
    for field in one._fields:
        assert torch.equal(getattr(one, field), getattr(many, field)), field


def test_no_gradient_flows():
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    s = ops.score(x)
    assert not any(t.requires_grad for t in s)


@pytest.mark.parametrize(
    "layout,dtype",
    [("contiguous", torch.float32), ("channels_last", torch.float16), ("sliced", torch.bfloat16)],
)
def test_opcheck(layout, dtype):
    x = make_layout(random_logits((2, 5, 7, 9), dtype), layout)
    torch.library.opcheck(torch.ops.lse_fast.score.default, (x,))
    torch.library.opcheck(torch.ops.lse_fast.score.default, (x.detach().requires_grad_(),))


def test_torch_compile_fullgraph():
    def per_class_mean_confidence(logits):
        s = ops.score(logits)
        return s.class_confidence / s.class_pixels.clamp(min=1), s.label

    x = random_logits((2, 19, 33, 65), torch.float32)
    compiled = torch.compile(per_class_mean_confidence, fullgraph=True)
    got_mean, got_label = compiled(x)
    want_mean, want_label = per_class_mean_confidence(x)
    assert torch.equal(got_label, want_label)
    assert_close(got_mean, want_mean, atol=1e-6, name="mean confidence")


@pytest.mark.parametrize(
    "make,match,cxx_match",
    [
        (lambda: torch.randn(19, 8, 8), r"`logits` must have 4 dimensions \[N, C, H, W\], got shape \[19, 8, 8\]", None),
        (lambda: torch.randn(1, 2, 19, 8, 8), r"`logits` must have 4 dimensions", None),
        (lambda: torch.randint(0, 5, (1, 19, 8, 8)), r"`logits` must be float32, float16 or bfloat16, got torch.int64", None),
        (lambda: torch.randn(1, 19, 8, 8, dtype=torch.float64), r"must be float32, float16 or bfloat16, got torch.float64", None),
        (lambda: torch.randn(1, 0, 8, 8), r"`logits` must have at least one class", None),
    ],
    ids=["rank3", "rank5", "int64", "float64", "no-classes"],
)
def test_bad_input(make, match, cxx_match):
    x = make()
    with pytest.raises(RuntimeError, match=match):
        ops.score(x)
    # The C++ op checks on its own too, for callers of torch.ops directly.
    with pytest.raises(RuntimeError, match=cxx_match or match):
        torch.ops.lse_fast.score.default(x)


def test_not_a_tensor():
    with pytest.raises(TypeError, match="`logits` must be a torch.Tensor"):
        ops.score([[1.0, 2.0]])


@requires_cuda
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_matches_float64(shape, dtype, layout):
    x = random_logits(shape, dtype)
    got = ops.score(make_layout(x.cuda(), layout))  # layout built on the device
    assert got.confidence.is_cuda and got.class_pixels.is_cuda
    check_against_truth(got, truth(x), dtype)


@requires_cuda
def test_cuda_paper_shape_and_opcheck():
    x = random_logits((2, 19, 512, 1024), torch.float32, scale=3.0)
    got, want = ops.score(x.cuda()), truth(x)
    check_against_truth(got, want, torch.float32)
    torch.library.opcheck(torch.ops.lse_fast.score.default, (x[:, :, :64, :64].cuda(),))


# ------------------------------------------------ score of upsampled logits

UPSAMPLE_CASES = [
    ((1, 19, 13, 17), (104, 136)),  # stride 8, as DeepLab's logits
    ((2, 5, 7, 9), (23, 31)),  # odd, non-integer factors
    ((1, 3, 1, 1), (5, 4)),  # one low-resolution pixel
    ((2, 4, 9, 11), (9, 11)),  # same size: equals the direct score
    ((1, 6, 20, 24), (7, 5)),  # downsampling goes through the same taps
]


def near_tie(logits64, margin=1e-4):
    top2 = logits64.topk(2, dim=1).values if logits64.shape[1] > 1 else None
    if top2 is None:
        return torch.zeros_like(logits64[:, 0], dtype=torch.bool)
    return (top2[:, 0] - top2[:, 1]) < margin


@pytest.mark.parametrize("shape,size", UPSAMPLE_CASES, ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_upsampled_matches_score_of_interpolate(shape, size, dtype, layout):
    x = random_logits(shape, dtype)
    got = ops.score(make_layout(x, layout), size=size)
    up64 = F.interpolate(x.double(), size=size, mode="bilinear", align_corners=False)
    want = reference.score(x.double(), size=size)
    # The upsampled logits are blended in float32 (rounding ~1e-7 relative):
    # labels agree except where the float64 top two are within that.
    ties = near_tie(up64)
    assert torch.equal(got.label[~ties], want.label[~ties])
    assert_close(got.confidence, want.confidence, atol=2e-6, name="confidence")
    assert_close(got.entropy, want.entropy, atol=4e-6, name="entropy")
    if not ties.any():
        assert torch.equal(got.class_pixels, want.class_pixels)
        assert_close(got.class_confidence, want.class_confidence, atol=1e-4, rtol=1e-5, name="class_confidence")
        assert_close(got.class_entropy, want.class_entropy, atol=1e-4, rtol=1e-5, name="class_entropy")
    # The float32 reference the README promises, pair for pair.
    ref = reference.score(x, size=size)
    assert_close(got.confidence, ref.confidence, atol=4e-6, name="confidence vs float32 reference")


def test_upsampled_same_size_is_the_direct_score():
    x = random_logits((2, 7, 11, 13), torch.float32)
    a, b = ops.score(x, size=(11, 13)), ops.score(x)
    assert torch.equal(a.label, b.label)
    # identity taps blend to the same value up to 1 - 0 weights: exact
    assert_close(a.confidence, b.confidence, atol=0, name="confidence")


def test_upsampled_nan_logit_stays_local():
    x = random_logits((1, 3, 4, 4), torch.float32)
    x[0, 1, 0, 0] = float("nan")
    s = ops.score(x, size=(16, 16))
    # Only output pixels whose taps read low-res pixel (0, 0) are NaN.
    assert torch.isnan(s.confidence[0, 0, 0]) and torch.isfinite(s.confidence[0, 15, 15])
    want = reference.score(x, size=(16, 16))
    assert torch.equal(torch.isnan(s.confidence), torch.isnan(want.confidence))


def test_upsampled_opcheck_and_compile():
    x = random_logits((2, 5, 6, 7), torch.float32)
    torch.library.opcheck(torch.ops.lse_fast.score_upsampled.default, (x, [13, 9]))
    f = torch.compile(lambda z: ops.score(z, size=(13, 9)).class_pixels, fullgraph=True)
    assert torch.equal(f(x), ops.score(x, size=(13, 9)).class_pixels)


def test_upsampled_empty_batch():
    s = ops.score(random_logits((0, 3, 4, 5), torch.float32), size=(8, 10))
    assert s.confidence.shape == (0, 8, 10) and s.class_pixels.shape == (0, 3)


@requires_cuda
@pytest.mark.parametrize("shape,size", UPSAMPLE_CASES, ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_upsampled_matches_cpu(shape, size, dtype):
    x = random_logits(shape, dtype)
    got, want = ops.score(x.cuda(), size=size), ops.score(x, size=size)
    assert_close(got.confidence, want.confidence, atol=2e-6, name="confidence")
    assert_close(got.entropy, want.entropy, atol=4e-6, name="entropy")
    assert_close(got.class_confidence, want.class_confidence, atol=1e-4, rtol=1e-5, name="class_confidence")


# ------------------------------------------------ -inf logits (p = 0) and align_corners


def with_neg_inf(x, share=0.3, seed=0, first=True):
    """x with a share of its logits set to -inf (never all of a pixel's
    classes unless C == 1), and with `first` every pixel's class 0 -inf too
    where the pixel keeps a finite class (the case the online softmax met
    as -inf - -inf)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(x.shape, generator=g) < share
    if first:
        mask[:, 0] = True
    keep = torch.randint(0, x.shape[1], (x.shape[0], 1, *x.shape[2:]), generator=g)
    mask.scatter_(1, keep, False)  # one finite class per pixel
    return x.masked_fill(mask, float("-inf"))


def float64_truth_with_zeros(x):
    """float64 softmax statistics with 0 log 0 = 0, written out directly."""
    x = x.double()
    p = torch.softmax(x, 1)
    c = x.shape[1]
    conf, label = p.max(1)
    h = -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(1)
    ent = h / math.log(c) if c > 1 else torch.zeros_like(h)
    return conf, label, ent


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 19, 9, 13), (1, 2, 5, 300), (1, 5, 3, 4)], ids=lambda s: "x".join(map(str, s)))
def test_neg_inf_logits_are_p_zero(shape, dtype, layout):
    x = with_neg_inf(random_logits(shape, dtype), seed=shape[1])
    got = ops.score(make_layout(x, layout))
    conf, label, ent = float64_truth_with_zeros(x)
    assert torch.isfinite(got.confidence).all() and torch.isfinite(got.entropy).all()
    assert torch.isfinite(got.class_confidence).all() and torch.isfinite(got.class_entropy).all()
    assert torch.equal(got.label, label)
    assert_close(got.confidence, conf.float(), atol=1e-6, name="confidence")
    assert_close(got.entropy, ent.float(), atol=2e-6, name="entropy")
    # The reference and its float64 form agree with the same truth.
    check_against_truth(got, truth(x), dtype)
    ref = reference.score(x)
    assert torch.isfinite(ref.entropy).all()
    assert_close(got.entropy, ref.entropy, atol=2e-6, name="entropy vs reference")


def test_neg_inf_pixel_rules():
    inf, nan = float("inf"), float("nan")
    rows = [
        [-inf, -inf, 0.0],  # first classes -inf: p = (0, 0, 1)
        [-inf, 2.0, -inf],
        [1.0, 1.0, -inf],  # p = (1/2, 1/2, 0): entropy log 2 / log 3
        [-inf, -inf, -inf],  # no class has a probability: NaN
        [0.0, inf, 1.0],  # +inf: NaN
        [0.0, nan, -inf],  # NaN: NaN
    ]
    x = torch.tensor(rows).T.reshape(1, 3, 1, len(rows)).contiguous()
    s = ops.score(x)
    assert s.confidence[0, 0, :3].tolist() == [1.0, 1.0, 0.5]
    assert s.label[0, 0, :3].tolist() == [2, 1, 0]
    assert s.entropy[0, 0, :2].tolist() == [0.0, 0.0]
    assert s.entropy[0, 0, 2].item() == pytest.approx(math.log(2) / math.log(3), abs=1e-6)
    assert torch.isnan(s.confidence[0, 0, 3:]).all() and torch.isnan(s.entropy[0, 0, 3:]).all()
    ref = reference.score(x)
    assert torch.equal(torch.isnan(ref.confidence), torch.isnan(s.confidence))
    assert torch.equal(torch.isnan(ref.entropy), torch.isnan(s.entropy))
    # C == 1: a -inf logit has no softmax either
    one = ops.score(torch.tensor([0.0, -inf]).reshape(1, 1, 1, 2))
    assert one.confidence[0, 0, 0] == 1.0 and torch.isnan(one.confidence[0, 0, 1])


# (low-res size, output size, align_corners) whose scale is exact in
# float32, so that a zero weight is zero in the float64 truth too:
# align_corners=False clamps the first output row/column (weight 0 on tap
# 1) and repeats the last low-res row/column; align_corners=True with
# 2h - 1 lands every other output pixel exactly on a low-res pixel; size ==
# input puts every pixel there; the 3x and 4x downsamplings read exact
# pixels only.
ZERO_WEIGHT_CASES = [
    ((6, 7), (12, 14), False), ((6, 7), (6, 7), False), ((9, 12), (3, 4), False),
    ((6, 7), (11, 13), True), ((6, 7), (6, 7), True), ((9, 13), (3, 4), True),
]


def zero_weight_logits(dtype, hw, seed=0):
    """[2, 5, h, w] logits: classes 0 and 2 -inf everywhere, classes 3 and 4
    -inf at a random 40% of pixels (borders and exact positions included),
    class 1 always finite (no pixel is all -inf after upsampling)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(2, 5, *hw, generator=g) * 4).to(dtype)
    mask = torch.rand(2, 5, *hw, generator=g) < 0.4
    mask[:, 0] = mask[:, 2] = True
    mask[:, 1] = False
    return x.masked_fill(mask, float("-inf"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("hw,size,align_corners", ZERO_WEIGHT_CASES, ids=str)
def test_upsampled_neg_inf_at_zero_weight_taps(hw, size, align_corners, layout, dtype):
    # A -inf logit is p = 0 at any tap. Where its tap weight is exactly 0 it
    # contributes nothing (F.interpolate would give 0 * -inf = NaN); where
    # the weight is > 0 the upsampled logit is -inf (p = 0). Every output
    # pixel keeps a finite class: confidence, label and entropy are finite
    # and equal to float64 softmax statistics with 0 log 0 = 0.
    x = zero_weight_logits(dtype, hw, seed=size[0] + align_corners)
    got = ops.score(make_layout(x, layout), size=size, align_corners=align_corners)
    up64 = reference.upsample_bilinear(x.double(), size, align_corners=align_corners)
    assert torch.isfinite(up64[:, 1]).all() and torch.isneginf(up64[:, 0]).all()
    conf, label, ent = float64_truth_with_zeros(up64)
    assert torch.isfinite(got.confidence).all() and torch.isfinite(got.entropy).all()
    assert torch.isfinite(got.class_confidence).all() and torch.isfinite(got.class_entropy).all()
    ok = ~near_tie(up64.nan_to_num(neginf=-1e30))
    assert torch.equal(got.label[ok], label[ok])
    assert_close(got.confidence, conf.float(), atol=2e-6, name="confidence")
    assert_close(got.entropy, ent.float(), atol=4e-6, name="entropy")
    # The reference computes the same rule, in float32 and float64.
    for ref in (reference.score(x, size=size, align_corners=align_corners),
                reference.score(x.double(), size=size, align_corners=align_corners)):
        assert torch.isfinite(ref.confidence).all() and torch.isfinite(ref.entropy).all()
        assert_close(got.confidence, ref.confidence, atol=2e-6, name="confidence vs reference")
        assert_close(got.entropy, ref.entropy, atol=4e-6, name="entropy vs reference")
    # The case exercises the rule: plain F.interpolate turns some pixel NaN.
    if dtype == torch.float32:
        plain = F.interpolate(x.double(), size, mode="bilinear", align_corners=align_corners)
        assert torch.isnan(plain).any()


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_upsampled_neg_inf_at_zero_weight_taps(dtype):
    for hw, size, align_corners in ZERO_WEIGHT_CASES:
        x = zero_weight_logits(dtype, hw, seed=size[0] + align_corners)
        for probs in (False, True):
            op = ops.score_probs if probs else ops.score
            v = torch.softmax(x.float(), 1).to(dtype) if probs else x
            got = op(v.cuda(), size=size, align_corners=align_corners)
            want = op(v, size=size, align_corners=align_corners)
            assert torch.isfinite(got.confidence).all() and torch.isfinite(got.entropy).all()
            assert_close(got.confidence, want.confidence, atol=2e-6, name="confidence")
            assert_close(got.entropy, want.entropy, atol=4e-6, name="entropy")


@pytest.mark.parametrize("align_corners", [False, True])
def test_upsampled_neg_inf_with_positive_weight_is_p_zero(align_corners):
    # Class 0 is the largest logit everywhere except at one low-res pixel,
    # where it is -inf: every output pixel reading that pixel with a
    # weight > 0 has p_0 = 0 (label 1), all others keep label 0.
    x = torch.zeros(1, 2, 4, 5)
    x[0, 0] = 3.0
    x[0, 0, 1, 2] = float("-inf")
    size = (7, 9) if align_corners else (8, 10)
    got = ops.score(x, size=size, align_corners=align_corners)
    up = reference.upsample_bilinear(x.double(), size, align_corners=align_corners)
    reads = torch.isneginf(up[0, 0])
    assert reads.any() and not reads.all()
    assert torch.equal(got.label[0] == 1, reads)
    assert torch.all(got.confidence[0][reads] == 1.0) and torch.all(got.entropy[0][reads] == 0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    "hw,size", [((5, 7), (20, 28)), ((4, 4), (7, 9)), ((1, 1), (4, 5)), ((6, 8), (3, 4)), ((3, 5), (3, 5)), ((16, 32), (128, 256))],
    ids=lambda v: "x".join(map(str, v)),
)
def test_reference_upsample_equals_interpolate_on_finite_input(hw, size, align_corners, dtype):
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(3)).to(dtype)
    got = reference.upsample_bilinear(x, size, align_corners=align_corners)
    want = F.interpolate(x, size, mode="bilinear", align_corners=align_corners)
    assert got.dtype == dtype and got.shape == want.shape
    # The same taps; the products may round in another order (<= 2 ulp of |x| <= 5).
    assert_close(got, want, atol=1e-6 if dtype == torch.float32 else 1e-14, rtol=0, name="upsample_bilinear")


def test_reference_upsample_zero_weight_taps_stay_finite():
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    x[0, 0, 1, :] = float("-inf")  # row 1: the zero-weight second tap of output row 0
    # Output rows reading row 1 with a weight > 0 are -inf, the others 0;
    # F.interpolate gives NaN in row 0 (and column 0: 1 * -inf + 0 * -inf).
    for align, size, rows in ((False, (6, 6), [1, 2, 3, 4]), (True, (5, 5), [1, 2, 3])):
        up = reference.upsample_bilinear(x, size, align_corners=align)
        plain = F.interpolate(x, size, mode="bilinear", align_corners=align)
        assert torch.isnan(plain[0, 0, 0]).all() and torch.isnan(plain[0, 0, rows, 0]).all()
        want = torch.zeros(size, dtype=torch.float64)
        want[rows] = float("-inf")
        assert torch.equal(up[0, 0], want)


@pytest.mark.parametrize("align_corners", [False, True])
def test_upsampled_probs_nan_at_zero_weight_tap_adds_nothing(align_corners):
    # score_probs under the same rule: a NaN (or inf) probability read with
    # weight 0 does not reach the output; read with weight > 0 it gives NaN.
    p = torch.softmax(torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(2)), 1)
    p[0, 1, 1, 1] = float("nan")
    size = (7, 7) if align_corners else (8, 8)
    got = ops.score_probs(p, size=size, align_corners=align_corners)
    ref = reference.score_probs(p, size=size, align_corners=align_corners)
    plain = F.interpolate(p, size, mode="bilinear", align_corners=align_corners)
    nan = torch.isnan(reference.upsample_bilinear(p, size, align_corners=align_corners)).any(1)
    assert nan.any() and (torch.isnan(plain).any(1) & ~nan).any()
    assert torch.equal(torch.isnan(got.confidence), nan) and torch.equal(torch.isnan(got.entropy), nan)
    assert torch.equal(torch.isnan(ref.confidence), nan)
    assert_close(got.confidence[~nan], ref.confidence[~nan], atol=2e-6, name="confidence")
    assert_close(got.entropy[~nan], ref.entropy[~nan], atol=4e-6, name="entropy")


@pytest.mark.parametrize("shape,size", UPSAMPLE_CASES, ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_upsampled_align_corners_matches_score_of_interpolate(shape, size, dtype, layout):
    x = random_logits(shape, dtype)
    got = ops.score(make_layout(x, layout), size=size, align_corners=True)
    up64 = F.interpolate(x.double(), size=size, mode="bilinear", align_corners=True)
    want = reference.score(x.double(), size=size, align_corners=True)
    # align_corners=True scales by (h - 1) / (H - 1), which float32 rounds
    # (F.interpolate's float32 kernel too): source coordinates carry ~1e-7
    # relative error, so against float64 the bound is looser than for the
    # exact 8x scales of align_corners=False; against the float32 reference
    # (the same taps) it is the usual one.
    ties = near_tie(up64, margin=1e-3)
    assert torch.equal(got.label[~ties], want.label[~ties])
    assert_close(got.confidence, want.confidence, atol=2e-5, name="confidence")
    assert_close(got.entropy, want.entropy, atol=4e-5, name="entropy")
    ref = reference.score(x, size=size, align_corners=True)
    ref_ties = near_tie(F.interpolate(x.float(), size=size, mode="bilinear", align_corners=True), margin=1e-4)
    assert torch.equal(got.label[~ref_ties], ref.label[~ref_ties])
    assert_close(got.confidence, ref.confidence, atol=4e-6, name="confidence vs float32 reference")
    assert_close(got.entropy, ref.entropy, atol=8e-6, name="entropy vs float32 reference")
    # The flag matters wherever the factor is not 1.
    if tuple(size) != tuple(shape[2:]) and min(shape[2:]) > 1:
        other = ops.score(x, size=size)
        assert not torch.equal(other.confidence, got.confidence)


def test_upsampled_align_corners_opcheck_and_compile():
    x = random_logits((2, 5, 6, 7), torch.float32)
    torch.library.opcheck(torch.ops.lse_fast.score_upsampled.default, (x, [13, 9], True))
    f = torch.compile(lambda z: ops.score(z, size=(13, 9), align_corners=True).class_pixels, fullgraph=True)
    assert torch.equal(f(x), ops.score(x, size=(13, 9), align_corners=True).class_pixels)


def test_align_corners_must_be_a_bool():
    with pytest.raises(TypeError, match=r"score: `align_corners` must be a bool, got 1"):
        ops.score(random_logits((1, 3, 4, 4), torch.float32), size=(8, 8), align_corners=1)


@requires_cuda
@pytest.mark.parametrize("shape,size", UPSAMPLE_CASES, ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_upsampled_align_corners_and_neg_inf_match_cpu(shape, size, dtype):
    x = with_neg_inf(random_logits(shape, dtype), seed=1) if shape[1] > 1 else random_logits(shape, dtype)
    for align in (False, True):
        got, want = ops.score(x.cuda(), size=size, align_corners=align), ops.score(x, size=size, align_corners=align)
        assert_close(got.confidence, want.confidence, atol=2e-6, name="confidence")
        assert_close(got.entropy, want.entropy, atol=4e-6, name="entropy")
    got, want = ops.score(x.cuda()), ops.score(x)
    assert torch.equal(got.label.cpu(), want.label)
    assert_close(got.entropy, want.entropy, atol=2e-6, name="entropy")
