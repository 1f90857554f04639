"""focal_ce_loss's options from the field's codes (issue 18 item 4): per-class
`weight`, per-pixel `pixel_weight`, `ce_weight`, reduction "mean_all", and
the explicit error on second-order gradients."""

import pytest
import torch
import torch.nn.functional as F

import lse_fast
from lse_fast import ops, reference
from tests.conftest import requires_cuda
from tests.helpers import DTYPES, LAYOUTS, assert_close, make_layout
from tests.test_focal_ce_loss import TOL, grad_atol, make_case, truth


def fused(x, t, reduction, out_weight, **kw):
    """Loss and gradient of (loss * out_weight).sum() (out_weight from truth())."""
    xg = x.detach().requires_grad_()
    loss = ops.focal_ce_loss(xg, t, reduction=reduction, **kw)
    (grad,) = torch.autograd.grad((loss * out_weight.to(loss.dtype).to(loss.device)).sum(), xg)
    return loss.detach(), grad

REDUCTIONS = ["mean", "sum", "none", "mean_all"]
OPTION_SETS = {
    "weight": dict(weight=True),
    "pixel": dict(pixel_weight=True),
    "both-ce0.5": dict(weight=True, pixel_weight=True, ce_weight=0.5),
    "focal-only": dict(ce_weight=0.0, beta=1.0, gamma=2.0),
}


def options(x, spec, seed=0):
    """The keyword arguments of an OPTION_SETS entry for logits `x`
    (weights drawn as float32, so float32 kernels see them exactly)."""
    n, c, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    kw = {k: v for k, v in spec.items() if k not in ("weight", "pixel_weight")}
    if spec.get("weight"):
        kw["weight"] = torch.rand(c, generator=g) * 2 + 0.25
    if spec.get("pixel_weight"):
        kw["pixel_weight"] = torch.rand(n, h, w, generator=g)
    return kw


@pytest.mark.parametrize("spec", list(OPTION_SETS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_options_match_float64(spec, dtype, reduction):
    x, t = make_case((2, 7, 19, 37), dtype)
    kw = options(x, OPTION_SETS[spec])
    want_loss, want_grad, weight = truth(x, t, reduction, **kw)
    loss, grad = fused(x, t, reduction, weight, **kw)
    tol = TOL[dtype]
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert_close(loss, want_loss, atol=1e-6, rtol=4 * tol["loss_rtol"], name="loss")
    assert_close(grad, want_grad, atol=grad_atol(want_grad, tol["grad_atol"], dtype), rtol=tol["grad_rtol"], name="grad")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("target_dtype", [torch.int64, torch.uint8], ids=str)
def test_options_layouts_and_weight_layouts(layout, target_dtype):
    x, t = make_case((2, 6, 13, 37), torch.float32, target_dtype)
    kw = options(x, OPTION_SETS["both-ce0.5"])
    want_loss, want_grad, weight = truth(x, t, "mean", **kw)
    # pixel_weight in another dtype and with strides: converted, same values
    kw["pixel_weight"] = kw["pixel_weight"].double().transpose(1, 2).contiguous().transpose(1, 2)
    kw["weight"] = kw["weight"].double()
    loss, grad = fused(make_layout(x, layout), t, "mean", weight, **kw)
    assert_close(loss, want_loss, rtol=4e-6, name="loss")
    assert_close(grad, want_grad, atol=grad_atol(want_grad), rtol=1e-5, name="grad")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_class_weight_is_f_cross_entropy_exactly(reduction):
    x, t = make_case((2, 5, 11, 13), torch.float64)
    w = torch.rand(5, dtype=torch.float64) + 0.5
    ours = ops.focal_ce_loss(x, t, beta=0.0, weight=w, reduction=reduction)
    theirs = F.cross_entropy(x, t, weight=w, ignore_index=255, reduction=reduction)
    assert_close(ours, theirs, atol=1e-14, rtol=1e-12, name="loss")


def test_pixel_weight_divisors_follow_mmseg():
    """"mean": sum of pixel-weighted losses over the valid pixels (pixel weights
    not in the divisor); "mean_all": over N * H * W (mmseg weight_reduce_loss)."""
    x, t = make_case((2, 4, 9, 10), torch.float64, ignore_share=0.4)
    pw = torch.rand(2, 9, 10, dtype=torch.float64)
    per_pixel = ops.focal_ce_loss(x, t, reduction="none")
    valid = t != 255
    mean = ops.focal_ce_loss(x, t, pixel_weight=pw)
    mean_all = ops.focal_ce_loss(x, t, pixel_weight=pw, reduction="mean_all")
    assert_close(mean, (per_pixel * pw).sum() / valid.sum(), rtol=1e-13, name="mean")
    assert_close(mean_all, (per_pixel * pw).mean(), rtol=1e-13, name="mean_all")
    # class and pixel weights together: the divisor is the summed class weight only
    w = torch.rand(4, dtype=torch.float64) + 0.5
    both = ops.focal_ce_loss(x, t, weight=w, pixel_weight=pw)
    cw = w[torch.where(valid, t, 0)] * valid
    assert_close(both, (per_pixel * pw * cw).sum() / cw.sum(), rtol=1e-13, name="both")


def test_focal_only_is_kornia_without_alpha():
    x, t = make_case((2, 5, 6, 8), torch.float64, ignore_share=0.0)
    c, gamma = 5, 2.0
    ours = ops.focal_ce_loss(x, t, gamma=gamma, beta=1.0, ce_weight=0.0, reduction="sum") / x.numel()
    logp = torch.log_softmax(x, 1)
    onehot = F.one_hot(t, c).permute(0, 3, 1, 2).double()
    theirs = (-onehot * (1 - logp.exp()) ** gamma * logp).mean()  # kornia: mean over N*C*H*W
    assert_close(ours, theirs, rtol=1e-13, name="focal-only")


def test_negative_and_zero_weights_are_used_as_given():
    x, t = make_case((1, 4, 6, 7), torch.float64)
    w = torch.tensor([-1.0, 0.5, 2.0, 0.0], dtype=torch.float64)
    pw = torch.randn(1, 6, 7, dtype=torch.float64)
    for reduction in REDUCTIONS:
        assert_close(ops.focal_ce_loss(x, t, weight=w, pixel_weight=pw, reduction=reduction),
                     reference.focal_ce_loss(x, t, weight=w, pixel_weight=pw, reduction=reduction),
                     atol=1e-13, rtol=1e-12, name=reduction)


def test_nan_weights_propagate():
    x, t = make_case((1, 4, 6, 7), torch.float32, ignore_share=0.0)
    pw = torch.ones(1, 6, 7)
    pw[0, 2, 3] = float("nan")
    xg = x.clone().requires_grad_()
    loss = ops.focal_ce_loss(xg, t, pixel_weight=pw, reduction="none")
    assert torch.isnan(loss[0, 2, 3]) and torch.isfinite(loss).sum() == loss.numel() - 1
    (g,) = torch.autograd.grad(loss.sum(), xg)
    assert torch.isnan(g[0, :, 2, 3]).all() and torch.isfinite(g).sum() == g.numel() - 4
    assert torch.isnan(ops.focal_ce_loss(x, t, pixel_weight=pw, reduction="mean_all"))


def test_all_ignored_weighted_mean_is_zero():
    x = torch.randn(1, 3, 4, 5, requires_grad=True)
    t = torch.full((1, 4, 5), 255)
    loss = ops.focal_ce_loss(x, t, weight=torch.ones(3), pixel_weight=torch.ones(1, 4, 5))
    (g,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0 and torch.count_nonzero(g) == 0


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64_with_options(reduction):
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 4, (2, 5, 6))
    t[0, 0] = 255
    w = torch.rand(4, dtype=torch.float64) + 0.5
    pw = torch.rand(2, 5, 6, dtype=torch.float64)
    fn = lambda z: ops.focal_ce_loss(z, t, gamma=2.0, beta=0.5, reduction=reduction, weight=w,  # noqa: E731
                                     pixel_weight=pw, ce_weight=0.7)
    assert torch.autograd.gradcheck(fn, (x,))


def test_independent_of_thread_count_with_weights():
    x, t = make_case((2, 19, 61, 517), torch.float32)
    kw = options(x, OPTION_SETS["both-ce0.5"])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.focal_ce_loss(x, t, **kw)
        torch.set_num_threads(max(2, threads))
        many = ops.focal_ce_loss(x, t, **kw)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_defaults_are_bit_identical_to_explicit_unit_weights():
    """ce_weight=1 and unit weights change no bit (the default path)."""
    x, t = make_case((2, 7, 13, 37), torch.float32)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = ops.focal_ce_loss(xa, t, reduction="sum")
    b = ops.focal_ce_loss(xb, t, reduction="sum", weight=torch.ones(7), pixel_weight=torch.ones(2, 13, 37),
                          ce_weight=1.0)
    assert torch.equal(a, b)
    assert torch.equal(torch.autograd.grad(a, xa)[0], torch.autograd.grad(b, xb)[0])


@pytest.mark.parametrize("reduction", [1, 0, 2, 3])
def test_opcheck_with_options(reduction):
    x, t = make_case((2, 5, 7, 9), torch.float32, torch.uint8)
    w, pw = torch.rand(5) + 0.5, torch.rand(2, 7, 9)
    xg = x.clone().requires_grad_()
    torch.library.opcheck(torch.ops.lse_fast.focal_ce_loss.default,
                          (xg, t, 3.0, 0.1, 255, reduction, True, True, w, pw, 0.5))
    torch.library.opcheck(torch.ops.lse_fast.focal_ce_loss.default,
                          (x, t, 2.0, 1.0, 255, reduction, False, False, None, pw.double(), 0.0))


def test_second_order_gradient_raises():
    x = torch.randn(1, 4, 5, 6, requires_grad=True)
    t = torch.randint(0, 4, (1, 5, 6))
    loss = ops.focal_ce_loss(x, t, weight=torch.rand(4), pixel_weight=torch.rand(1, 5, 6))
    (g,) = torch.autograd.grad(loss, x, create_graph=True)  # the first order still works
    assert g.shape == x.shape
    first = torch.autograd.grad(ops.focal_ce_loss(x, t), x)[0]
    (g0,) = torch.autograd.grad(ops.focal_ce_loss(x, t), x, create_graph=True)
    assert torch.equal(g0.detach(), first)
    with pytest.raises(RuntimeError, match=r"lse_fast.focal_ce_loss: second-order gradients .* lse_fast.reference.focal_ce_loss"):
        torch.autograd.grad(g.pow(2).sum(), x)
    # a gradient penalty mixed into a loss: backward raises too, never a silent zero
    penalty = g0.pow(2).sum() + (x * 2).sum()
    with pytest.raises(RuntimeError, match=r"second-order gradients"):
        penalty.backward()
    # logits that are a temporary (the Python object gone before backward):
    # the error comes at the first create_graph backward or at the second one
    with pytest.raises(RuntimeError, match=r"second-order gradients"):
        loss_tmp = ops.focal_ce_loss(x * 2, t)
        (gt,) = torch.autograd.grad(loss_tmp, x, create_graph=True)
        torch.autograd.grad(gt.sum(), x)
    # the reference gives the second order
    (gr,) = torch.autograd.grad(reference.focal_ce_loss(x, t), x, create_graph=True)
    assert torch.autograd.grad(gr.pow(2).sum(), x)[0].abs().sum() > 0


def test_module_options():
    x, t = make_case((2, 5, 9, 10), torch.float32)
    w, pw = torch.rand(5) + 0.5, torch.rand(2, 9, 10)
    crit = lse_fast.FocalCELoss(weight=w, ce_weight=0.5, reduction="mean_all")
    assert "ce_weight=0.5" in repr(crit) and "weight" in dict(crit.named_buffers())
    assert_close(crit(x, t, pw), ops.focal_ce_loss(x, t, weight=w, pixel_weight=pw, ce_weight=0.5, reduction="mean_all"),
                 rtol=0, name="module")
    assert crit.to(torch.float64).weight.dtype == torch.float64  # a buffer: follows .to()
    with pytest.raises(RuntimeError, match=r"^lse_fast.focal_ce_loss: `ce_weight` must be a finite number, got nan$"):
        lse_fast.FocalCELoss(ce_weight=float("nan"))
    with pytest.raises(RuntimeError, match=r"`weight` must be float32, float16, bfloat16 or float64, got torch.int64"):
        lse_fast.FocalCELoss(weight=torch.ones(3, dtype=torch.int64))


@requires_cuda
@pytest.mark.parametrize("spec", list(OPTION_SETS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("check_targets", [True, False])
def test_cuda_options_match_float64(spec, dtype, reduction, check_targets):
    x, t = make_case((2, 7, 19, 37), dtype)
    kw = options(x, OPTION_SETS[spec])
    want_loss, want_grad, weight = truth(x, t, reduction, **kw)
    kw_cuda = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    loss, grad = fused(x.cuda(), t.cuda(), reduction, weight, check_targets=check_targets, **kw_cuda)
    rtol = 1e-12 if dtype == torch.float64 else (2e-5 if dtype == torch.float32 else 2**-7)
    assert_close(loss.cpu().double(), want_loss, atol=1e-6, rtol=2e-5, name="loss")
    assert_close(grad.cpu().double(), want_grad, atol=grad_atol(want_grad, 1e-6), rtol=rtol, name="grad")
