"""Fused masked focal + cross-entropy loss (LSE paper, Eq. 4, 5, 7), forward
and backward in one pass over the logits."""

import weakref

import torch

from lse_fast._extension import require_kernels_for
from lse_fast.ops.arguments import reduction_code, require_tensor

def focal_ce_loss(
    logits,
    target,
    *,
    gamma=3.0,
    beta=0.1,
    ignore_index=255,
    reduction="mean",
    check_targets=True,
    weight=None,
    pixel_weight=None,
    ce_weight=1.0,
):
    """Masked focal + cross-entropy loss: per valid pixel
    ``pixel_weight[n, h, w] * weight[t] * (ce_weight * ce + beta * (1 - p_t)^gamma * ce)``
    with ``ce = -log p_t`` (both weights 1 when not given).

    Args:
        logits: ``[N, C, H, W]`` float32/float16/bfloat16 (float64 for checks),
            any strides, CPU or CUDA.
        target: ``[N, H, W]`` int64 or uint8 class indices; pixels equal to
            ``ignore_index`` are left out. Any other value outside ``[0, C)``
            is an error.
        gamma, beta: focal exponent (>= 0) and weight of the focal term.
        reduction: ``"mean"`` (over valid pixels, or over the summed
            ``weight[t]`` of the valid pixels when ``weight`` is given, as
            ``F.cross_entropy(weight=)``; 0 when no pixel is valid),
            ``"mean_all"`` (the sum over ``N * H * W``, ignored pixels
            included: mmseg's default), ``"sum"``, or ``"none"``
            (``[N, H, W]``, 0 at ignored pixels).
        check_targets: ``True`` (default): a target outside ``[0, C)`` that
            is not `ignore_index` raises an error naming its value and index
            (on CUDA this costs one host synchronisation per call).
            ``False``: for targets known to be valid (e.g. the driver's
            pseudo-labels): no check and no host synchronisation (the CUDA
            call is capturable in a CUDA graph); an out-of-range target is
            then counted as ignored.
        weight: optional per-class weight ``[C]`` (any float dtype, same
            device), as ``F.cross_entropy(weight=)``.
        pixel_weight: optional per-pixel weight ``[N, H, W]`` (any float
            dtype and strides, same device), multiplying each pixel's loss
            (DACS/DAFormer's ``seg_weight``); it never enters the divisor
            of ``"mean"`` (mmseg's ``weight_reduce_loss``).
        ce_weight: weight of the cross-entropy term (finite);
            ``ce_weight=0, beta=1`` is the focal term alone.

        Both weights are constants: the op gives no gradient for them.
        Negative and NaN weights are used as given (NaN propagates).

    Returns:
        The loss, float32 (float64 for float64 logits). Differentiable w.r.t.
        ``logits``: the gradient is computed in the forward pass, in the
        logits' dtype, and backward only scales it. A second-order gradient
        through the op raises (use :func:`lse_fast.reference.focal_ce_loss`
        for gradient penalties).
    """
    require_tensor("focal_ce_loss", "logits", logits)
    require_tensor("focal_ce_loss", "target", target)
    if weight is not None:
        require_tensor("focal_ce_loss", "weight", weight)
    if pixel_weight is not None:
        require_tensor("focal_ce_loss", "pixel_weight", pixel_weight)
    code = reduction_code(reduction)
    require_kernels_for("focal_ce_loss", logits)
    compute_grad = torch.is_grad_enabled() and logits.requires_grad
    loss, _ = torch.ops.lse_fast.focal_ce_loss.default(
        logits, target, float(gamma), float(beta), int(ignore_index), code, compute_grad, bool(check_targets),
        weight, pixel_weight, float(ce_weight),
    )
    return loss


class FocalCELoss(torch.nn.Module):
    """Module form of :func:`focal_ce_loss`, a drop-in loss object. The
    per-class ``weight`` is a buffer (it moves with ``.to()``); the per-pixel
    weight changes with every batch, so it is an argument of ``forward``."""

    def __init__(self, gamma=3.0, beta=0.1, ignore_index=255, reduction="mean", check_targets=True, weight=None,
                 ce_weight=1.0):
        super().__init__()
        # The op's own checks, now rather than at the first forward: its Meta
        # kernel on a 1-pixel meta tensor with the weight's class count (no
        # data, no device work).
        classes = weight.shape[0] if isinstance(weight, torch.Tensor) and weight.dim() == 1 else 1
        if weight is not None:
            require_tensor("focal_ce_loss", "weight", weight)
        torch.ops.lse_fast.focal_ce_loss.default(
            torch.empty(1, classes, 1, 1, device="meta"), torch.empty(1, 1, 1, dtype=torch.int64, device="meta"),
            float(gamma), float(beta), int(ignore_index), reduction_code(reduction), False, bool(check_targets),
            None if weight is None else weight.to("meta"), None, float(ce_weight),
        )
        self.gamma, self.beta, self.ignore_index, self.reduction = float(gamma), float(beta), int(ignore_index), reduction
        self.check_targets = bool(check_targets)
        self.ce_weight = float(ce_weight)
        self.register_buffer("weight", weight)

    def forward(self, logits, target, pixel_weight=None):
        return focal_ce_loss(
            logits, target, gamma=self.gamma, beta=self.beta, ignore_index=self.ignore_index, reduction=self.reduction,
            check_targets=self.check_targets, weight=self.weight, pixel_weight=pixel_weight, ce_weight=self.ce_weight,
        )

    def extra_repr(self):
        extra = f", ce_weight={self.ce_weight}" if self.ce_weight != 1.0 else ""
        extra += ", weight=[...]" if self.weight is not None else ""
        return (f"gamma={self.gamma}, beta={self.beta}, ignore_index={self.ignore_index}, "
                f"reduction={self.reduction!r}{extra}")


# The fake (torch.compile) is the C++ Meta kernel in
# csrc/torch/focal_ce_loss_op.cpp, which runs the same checks as the CPU and
# CUDA kernels.


_NO_GRADS = (None,) * 10  # target, gamma, beta, ignore_index, reduction, compute_grad, check_targets, weight,
                          # pixel_weight, ce_weight


def _setup_context(ctx, inputs, output):
    _, grad = output
    ctx.mark_non_differentiable(grad)
    # grad_logits never receives a gradient: do not let autograd fill a
    # logits-sized zeros tensor for it.
    ctx.set_materialize_grads(False)
    ctx.reduction = inputs[5]
    ctx.save_for_backward(grad)
    # For create_graph=True only (see _backward): a weak reference, so the
    # logits are not kept alive by the op.
    logits = inputs[0]
    ctx.logits_ref = weakref.ref(logits) if logits.requires_grad else None


def _backward(ctx, grad_loss, _grad_of_grad):
    (grad,) = ctx.saved_tensors
    if grad.numel() == 0 and grad.dim() == 1:
        raise RuntimeError(
            "lse_fast.focal_ce_loss: backward called, but the gradient was not computed in the forward "
            "pass (logits did not require grad, or grad mode was off)"
        )
    if grad_loss is None:
        return (None,) + _NO_GRADS
    if ctx.reduction == 0:
        # Multiply in the wider dtype and round once.
        out = (grad * grad_loss.unsqueeze(1)).to(grad.dtype)
    elif _is_exactly_one(grad_loss):
        # loss.backward(): the forward already holds the answer; hand it out
        # without a second logits-sized buffer (autograd clones it before any
        # in-place accumulation, since the graph still references it).
        out = grad
    else:
        out = grad * grad_loss  # 0-dim: keeps grad's dtype
    if torch.is_grad_enabled():
        out = _first_order_only(ctx, out)
    return (out,) + _NO_GRADS


def _first_order_only(ctx, out):
    """Under create_graph=True: the gradient `out`, made differentiable in
    form through _SecondOrderError tied to the logits by a data-free edge
    (`logits[:0].sum()`), so that differentiating it again raises instead
    of silently giving zero. When the logits' Python object is gone, no
    such edge can be made and the error is raised now."""
    logits = ctx.logits_ref() if ctx.logits_ref is not None else None
    if logits is None:
        _SecondOrderError.backward(None)
    return _SecondOrderError.apply(out, logits[:0].sum())


class _SecondOrderError(torch.autograd.Function):
    """Identity on the incoming gradient; differentiating it raises."""

    @staticmethod
    def forward(ctx, grad, anchor):
        return grad.clone()  # only under create_graph=True

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(
            "lse_fast.focal_ce_loss: second-order gradients (double backward, e.g. a gradient penalty) are not "
            "supported: the op's gradient is computed in its forward pass and is not itself differentiable. Use "
            "lse_fast.reference.focal_ce_loss (same arguments) where the loss must be differentiated twice"
        )


def _is_exactly_one(t):
    # Only where reading the value is free: a plain CPU scalar. Tracing
    # (torch.compile, opcheck) passes tensor subclasses and takes the
    # general path.
    return type(t) is torch.Tensor and t.device.type == "cpu" and t.dim() == 0 and bool(t == 1)


torch.library.register_autograd("lse_fast::focal_ce_loss", _backward, setup_context=_setup_context)
