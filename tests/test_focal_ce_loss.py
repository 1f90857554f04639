"""lse_fast.ops.focal_ce_loss against its reference, float64 autograd and
F.cross_entropy."""

import pytest
import torch
import torch.nn.functional as F

import lse_fast
from lse_fast import ops, reference
from tests.conftest import requires_cuda
from tests.helpers import DTYPES, LAYOUTS, assert_close, make_layout

SHAPES = [(1, 19, 97, 131), (3, 16, 59, 1025), (2, 1, 7, 9), (2, 2, 33, 17), (4, 5, 3, 300)]
PARAMS = [(3.0, 0.1), (0.0, 0.5), (1.0, 1.0), (2.5, 0.0), (0.5, 2.0)]
REDUCTIONS = ["mean", "sum", "none"]

# Loss and gradient of the fused op against float64 truth on the same input
# values. Half-precision gradients are stored in their dtype, so they carry
# its rounding (relative 2^-11 for fp16, 2^-8 for bf16).
# grad_atol is relative to the largest gradient element: float32 computes
# 1 - p_t with an absolute error of a few ulps of 1 (as PyTorch's own
# float32 cross-entropy backward does), scaled by the pixel's coefficient.
TOL = {
    torch.float32: dict(loss_rtol=2e-6, grad_atol=1e-6, grad_rtol=1e-5),
    # two roundings to the dtype: the stored gradient, then its scaling
    torch.float16: dict(loss_rtol=2e-6, grad_atol=1e-6, grad_rtol=2**-10),
    torch.bfloat16: dict(loss_rtol=2e-6, grad_atol=1e-6, grad_rtol=2**-7),
}


# An fp16 gradient is rounded when stored and again when backward scales it,
# so below fp16's normal range its error floor is one subnormal step.
FP16_SUBNORMAL = 2.0**-24


def grad_atol(want_grad, rel=1e-6, dtype=torch.float32):
    floor = FP16_SUBNORMAL if dtype == torch.float16 else 0.0
    return max(rel * want_grad.abs().max().item(), floor)


def make_case(shape, dtype, target_dtype=torch.int64, ignore_share=0.2, ignore_index=255):
    n, c, h, w = shape
    x = (torch.randn(shape) * 3).to(dtype)
    t = torch.randint(0, c, (n, h, w))
    t[torch.rand(n, h, w) < ignore_share] = ignore_index
    return x, t.to(target_dtype)


def truth(x, t, reduction, **kw):
    """float64 loss and gradient of the reference (autograd)."""
    x64 = x.double().requires_grad_()
    loss = reference.focal_ce_loss(x64, t, reduction=reduction, **kw)
    weight = torch.linspace(0.5, 1.5, loss.numel(), dtype=torch.float64).reshape(loss.shape)
    (grad,) = torch.autograd.grad((loss * weight).sum(), x64)
    return loss.detach(), grad, weight


def fused(x, t, reduction, weight, **kw):
    xg = x.detach().requires_grad_()
    loss = ops.focal_ce_loss(xg, t, reduction=reduction, **kw)
    (grad,) = torch.autograd.grad((loss * weight.to(loss.dtype).to(loss.device)).sum(), xg)
    return loss.detach(), grad


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_float64(shape, dtype, reduction):
    x, t = make_case(shape, dtype)
    want_loss, want_grad, weight = truth(x, t, reduction)
    loss, grad = fused(x, t, reduction, weight)
    tol = TOL[dtype]
    assert loss.dtype == torch.float32 and grad.dtype == dtype and grad.shape == x.shape
    assert_close(loss, want_loss, atol=1e-6, rtol=tol["loss_rtol"], name="loss")
    assert_close(grad, want_grad, atol=grad_atol(want_grad, tol["grad_atol"], dtype), rtol=tol["grad_rtol"], name="grad")


@pytest.mark.parametrize("gamma,beta", PARAMS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("target_dtype", [torch.int64, torch.uint8], ids=str)
def test_params_layouts_targets(gamma, beta, layout, target_dtype):
    x, t = make_case((2, 7, 13, 37), torch.float32, target_dtype)
    want_loss, want_grad, weight = truth(x, t, "mean", gamma=gamma, beta=beta)
    loss, grad = fused(make_layout(x, layout), t, "mean", weight, gamma=gamma, beta=beta)
    assert_close(loss, want_loss, rtol=2e-6, name="loss")
    assert_close(grad, want_grad, atol=grad_atol(want_grad), rtol=1e-5, name="grad")


def test_matches_reference_float32():
    x, t = make_case((2, 19, 41, 67), torch.float32)
    for reduction in REDUCTIONS:
        a = x.clone().requires_grad_()
        b = x.clone().requires_grad_()
        la = ops.focal_ce_loss(a, t, reduction=reduction)
        lb = reference.focal_ce_loss(b, t, reduction=reduction)
        la.sum().backward()
        lb.sum().backward()
        assert_close(la, lb, atol=1e-5, rtol=1e-5, name=f"loss {reduction}")
        assert_close(a.grad, b.grad, atol=grad_atol(b.grad, 2e-6), rtol=1e-4, name=f"grad {reduction}")


@pytest.mark.parametrize("ignore_index", [255, -100, 3])
def test_beta_zero_is_cross_entropy(ignore_index):
    x, t = make_case((2, 5, 17, 23), torch.float32, ignore_index=ignore_index)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    loss = ops.focal_ce_loss(a, t, beta=0.0, ignore_index=ignore_index)
    want = F.cross_entropy(b, t, ignore_index=ignore_index)
    loss.backward()
    want.backward()
    assert_close(loss, want, rtol=1e-6, name="loss")
    assert_close(a.grad, b.grad, atol=1e-9, rtol=1e-5, name="grad")


def test_gamma_zero_is_scaled_cross_entropy():
    x, t = make_case((2, 5, 17, 23), torch.float32)
    beta = 0.3
    loss = ops.focal_ce_loss(x, t, gamma=0.0, beta=beta)
    assert_close(loss, (1 + beta) * F.cross_entropy(x, t, ignore_index=255), rtol=1e-6, name="loss")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_ignored_gives_exact_zero(reduction):
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    t = torch.full((2, 5, 6), 255, dtype=torch.uint8)
    loss = ops.focal_ce_loss(x, t, reduction=reduction)
    assert torch.all(loss == 0) and not torch.isnan(loss).any()
    loss.sum().backward()
    assert torch.all(x.grad == 0)


def test_none_is_zero_at_ignored_pixels():
    x, t = make_case((2, 6, 9, 11), torch.float32)
    loss = ops.focal_ce_loss(x, t, reduction="none")
    assert loss.shape == t.shape
    assert torch.all(loss[t == 255] == 0) and torch.all(loss[t != 255] > 0)


def test_extreme_logits_stay_finite():
    x = torch.tensor([-1e4, 1e4, 0.0])[torch.randint(0, 3, (2, 6, 8, 9))]
    t = torch.randint(0, 6, (2, 8, 9))
    want_loss, want_grad, weight = truth(x, t, "mean")
    loss, grad = fused(x, t, "mean", weight)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert_close(loss, want_loss, rtol=1e-5, name="loss")
    assert_close(grad, want_grad, atol=grad_atol(want_grad), rtol=1e-4, name="grad")


# Non-finite logits: (class offset from the pixel's target, value, ignored
# pixel). The fused op must give NaN/inf exactly where the reference does, in
# the loss and in the gradient, so a diverging run is never hidden (issue 15:
# one NaN logit used to give a finite loss).
NONFINITE = {
    "nan_other_class": (1, float("nan"), False),
    "nan_target_class": (0, float("nan"), False),
    "pos_inf": (1, float("inf"), False),
    "neg_inf_other_class": (1, -float("inf"), False),
    "neg_inf_target_class": (0, -float("inf"), False),
    "nan_at_ignored_pixel": (1, float("nan"), True),
}


@pytest.mark.parametrize("case", list(NONFINITE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nonfinite_logits_propagate_like_reference(case, dtype, reduction):
    offset, value, ignored = NONFINITE[case]
    x, t = make_case((2, 19, 16, 24), dtype, ignore_share=0.0)
    t[0, 5, 7] = 255 if ignored else 4
    x[0, (4 + offset) % 19, 5, 7] = value
    a = x.clone().requires_grad_()
    loss = ops.focal_ce_loss(a, t, reduction=reduction)
    loss.sum().backward()
    b = x.clone().requires_grad_()
    want = reference.focal_ce_loss(b, t, reduction=reduction)
    want.sum().backward()
    # Finite elements agree as in test_matches_float64; what matters here is
    # that NaN and inf sit exactly where the reference puts them.
    assert_close(loss, want, rtol=1e-4, name="loss")
    assert_close(a.grad, b.grad.to(dtype), atol=grad_atol(b.grad.nan_to_num(0, 0, 0), 1e-5, dtype),
                 rtol=2**-7, name="grad")
    # -inf at another class is a valid softmax input (p_c = 0); every other
    # case at a counted pixel leaves no finite loss.
    finite = ignored or case == "neg_inf_other_class"
    assert bool(torch.isfinite(loss).all()) == finite


def test_nan_logit_gives_nan_mean_loss():
    # The report of issue 15: one NaN logit in a 2x19x16x24 batch.
    x, t = make_case((2, 19, 16, 24), torch.float32)
    t[0, 3, 5] = 2
    x[0, 7, 3, 5] = float("nan")
    assert torch.isnan(ops.focal_ce_loss(x, t))
    assert torch.isnan(F.cross_entropy(x, t, ignore_index=255))


def test_gradcheck_float64():
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 4, (2, 5, 6))
    t[0, 0] = 255
    for reduction in REDUCTIONS:
        fn = lambda z: ops.focal_ce_loss(z, t, gamma=2.0, beta=0.5, reduction=reduction)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,))


def test_backward_scales_by_incoming_gradient():
    x, t = make_case((1, 5, 7, 8), torch.float32)
    a = x.clone().requires_grad_()
    (ops.focal_ce_loss(a, t) * 3.5).backward()
    b = x.clone().requires_grad_()
    (reference.focal_ce_loss(b, t) * 3.5).backward()
    assert_close(a.grad, b.grad, atol=grad_atol(b.grad, 2e-6), rtol=1e-5, name="grad")


def test_no_gradient_work_without_requires_grad():
    x, t = make_case((1, 5, 7, 8), torch.float32)
    loss = ops.focal_ce_loss(x, t)
    assert not loss.requires_grad
    with torch.no_grad():
        assert not ops.focal_ce_loss(x.requires_grad_(), t).requires_grad


def test_independent_of_thread_count():
    x, t = make_case((2, 19, 61, 517), torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.focal_ce_loss(x, t, reduction="sum")
        torch.set_num_threads(max(2, threads))
        many = ops.focal_ce_loss(x, t, reduction="sum")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_module_form():
    x, t = make_case((2, 5, 9, 10), torch.float32)
    crit = lse_fast.FocalCELoss(gamma=2.0, beta=0.2, ignore_index=255)
    assert "gamma=2.0" in repr(crit)
    assert_close(crit(x, t), ops.focal_ce_loss(x, t, gamma=2.0, beta=0.2), rtol=0, name="module")
    # Bad options fail at construction, with the op's own messages.
    with pytest.raises(RuntimeError, match=r"^lse_fast.focal_ce_loss: `gamma` must be >= 0, got -1$"):
        lse_fast.FocalCELoss(gamma=-1.0)
    with pytest.raises(RuntimeError, match=r"^lse_fast.focal_ce_loss: `reduction` must be one of"):
        lse_fast.FocalCELoss(reduction="avg")


@pytest.mark.parametrize("reduction,target_dtype", [(1, torch.int64), (0, torch.uint8), (2, torch.int64)])
def test_opcheck(reduction, target_dtype):
    x, t = make_case((2, 5, 7, 9), torch.float32, target_dtype)
    torch.library.opcheck(torch.ops.lse_fast.focal_ce_loss.default, (x, t, 3.0, 0.1, 255, reduction, False))
    xg = x.clone().requires_grad_()
    torch.library.opcheck(torch.ops.lse_fast.focal_ce_loss.default, (xg, t, 3.0, 0.1, 255, reduction, True))
    torch.library.opcheck(torch.ops.lse_fast.focal_ce_loss.default, (xg, t, 3.0, 0.1, 255, reduction, True, False))


def test_torch_compile_training_step():
    x, t = make_case((2, 7, 21, 33), torch.float32)

    def step(logits):
        return ops.focal_ce_loss(logits, t)

    a = x.clone().requires_grad_()
    torch.compile(step, fullgraph=True)(a).backward()
    b = x.clone().requires_grad_()
    step(b).backward()
    assert_close(a.grad, b.grad, atol=1e-9, rtol=1e-6, name="compiled grad")


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: (torch.randn(5, 7, 9), torch.zeros(5, 7, dtype=torch.long)), r"`logits` must have 4 dimensions"),
        (lambda: (torch.randn(1, 5, 7, 9), torch.zeros(1, 7, dtype=torch.long)), r"`target` must have 3 dimensions"),
        (lambda: (torch.randn(1, 5, 7, 9), torch.zeros(1, 7, 8, dtype=torch.long)), r"`target` must have shape \[N, H, W\] = \[1, 7, 9\]"),
        (lambda: (torch.randn(1, 5, 7, 9), torch.zeros(1, 7, 9, dtype=torch.int32)), r"`target` must be int64 or uint8, got torch.int32"),
        (lambda: (torch.randint(0, 3, (1, 5, 7, 9)), torch.zeros(1, 7, 9, dtype=torch.long)), r"`logits` must be float32, float16, bfloat16 or float64"),
        (lambda: (torch.randn(1, 0, 7, 9), torch.zeros(1, 7, 9, dtype=torch.long)), r"at least one class"),
    ],
    ids=["logits-rank", "target-rank", "target-shape", "target-dtype", "logits-dtype", "no-classes"],
)
def test_bad_input(make, match):
    x, t = make()
    with pytest.raises(RuntimeError, match=match):
        ops.focal_ce_loss(x, t)


def test_bad_arguments():
    x, t = make_case((1, 5, 7, 9), torch.float32)
    with pytest.raises(RuntimeError, match="`gamma` must be >= 0, got -1$"):
        ops.focal_ce_loss(x, t, gamma=-1.0)
    with pytest.raises(RuntimeError, match="`reduction` must be one of"):
        ops.focal_ce_loss(x, t, reduction="avg")
    with pytest.raises(RuntimeError, match="`gamma` must be >= 0"):  # the C++ op checks too
        torch.ops.lse_fast.focal_ce_loss.default(x, t, -1.0, 0.1, 255, 1, False)


@pytest.mark.parametrize("bad", [5, 7, -1])
def test_out_of_range_target_names_value(bad):
    x, t = make_case((1, 5, 7, 9), torch.float32)
    t[0, 3, 4] = bad
    with pytest.raises(RuntimeError, match=rf"`target` value {bad} at flat index 31 is outside \[0, 5\)"):
        ops.focal_ce_loss(x, t)
    with pytest.raises(RuntimeError, match=rf"`target` value {bad} is outside \[0, 5\)"):
        reference.focal_ce_loss(x, t)


@pytest.mark.parametrize("shape", [(0, 5, 7, 9), (2, 5, 0, 9)])
def test_empty(shape):
    x = torch.randn(shape, requires_grad=True)
    t = torch.zeros(shape[0], shape[2], shape[3], dtype=torch.long)
    loss = ops.focal_ce_loss(x, t)
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad.shape == x.shape


@requires_cuda
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_cuda_matches_float64(shape, dtype, reduction, layout):
    x, t = make_case(shape, dtype, torch.uint8)
    want_loss, want_grad, weight = truth(x, t, reduction)
    loss, grad = fused(make_layout(x.cuda(), layout), t.cuda(), reduction, weight)
    tol = TOL[dtype]
    assert_close(loss, want_loss, atol=1e-6, rtol=max(tol["loss_rtol"], 1e-5), name="loss")
    assert_close(grad, want_grad, atol=grad_atol(want_grad, tol["grad_atol"], dtype), rtol=tol["grad_rtol"], name="grad")


@requires_cuda
def test_cuda_bad_target_and_gradcheck():
    x, t = make_case((1, 5, 7, 9), torch.float32)
    t[0, 1, 1] = 9
    with pytest.raises(RuntimeError, match=r"`target` value 9 at flat index 10"):
        ops.focal_ce_loss(x.cuda(), t.cuda())
    x64 = torch.randn(2, 4, 5, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    t64 = torch.randint(0, 4, (2, 5, 6), device="cuda")
    assert torch.autograd.gradcheck(lambda z: ops.focal_ce_loss(z, t64), (x64,))


def test_check_targets_false_skips_the_report_and_counts_bad_targets_as_ignored():
    x, t = make_case((1, 5, 7, 9), torch.float32)
    bad = t.clone()
    bad[0, 3, 4] = 9
    with pytest.raises(RuntimeError, match="`target` value 9 at flat index 31"):
        ops.focal_ce_loss(x, bad)
    as_ignored = t.clone()
    as_ignored[0, 3, 4] = 255
    for reduction in REDUCTIONS:
        a = x.clone().requires_grad_()
        got = ops.focal_ce_loss(a, bad, reduction=reduction, check_targets=False)
        got.sum().backward()
        b = x.clone().requires_grad_()
        want = ops.focal_ce_loss(b, as_ignored, reduction=reduction)
        want.sum().backward()
        assert torch.equal(got, want) and torch.equal(a.grad, b.grad), reduction
    crit = lse_fast.FocalCELoss(check_targets=False)
    assert torch.equal(crit(x, bad), ops.focal_ce_loss(x, as_ignored))


@requires_cuda
def test_cuda_check_targets_false_is_graph_capturable():
    x, t = make_case((2, 19, 64, 128), torch.float32)
    x, t = x.cuda(), t.cuda()
    want = ops.focal_ce_loss(x, t)
    static = torch.zeros((), device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ops.focal_ce_loss(x, t, check_targets=False)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static.copy_(ops.focal_ce_loss(x, t, check_targets=False))
    graph.replay()
    torch.cuda.synchronize()
    assert_close(static, want, rtol=1e-6, name="loss")


def test_reused_gradient_buffer_is_never_shared_with_a_live_gradient():
    # >= 8 MiB gradients come from a one-buffer reuse cache (csrc/torch/memory.h):
    # a buffer is reused only after its tensor died, and reuse gives the same values.
    x1, t = make_case((1, 19, 256, 512), torch.float32)
    x2 = x1.flip(3).contiguous()
    g1 = torch.autograd.grad(ops.focal_ce_loss(x1.requires_grad_(), t), x1)[0]
    kept = g1.clone()
    g2 = torch.autograd.grad(ops.focal_ce_loss(x2.requires_grad_(), t), x2)[0]
    assert g1.data_ptr() != g2.data_ptr() and torch.equal(g1, kept)
    ptr = g1.data_ptr()
    del g1
    g3 = torch.autograd.grad(ops.focal_ce_loss(x1, t), x1)[0]
    assert g3.data_ptr() == ptr  # the freed buffer came back
    assert torch.equal(g3, kept)  # and was fully overwritten
    assert torch.equal(g2, torch.autograd.grad(ops.focal_ce_loss(x2, t), x2)[0])
