"""Fused masked focal + cross-entropy loss (LSE paper, Eq. 4, 5, 7), forward
and backward in one pass over the logits."""

import torch

from lse_fast._extension import require_kernels_for
from lse_fast.ops.arguments import reduction_code, require_tensor

def focal_ce_loss(logits, target, *, gamma=3.0, beta=0.1, ignore_index=255, reduction="mean", check_targets=True):
    """Masked focal + cross-entropy loss: per valid pixel
    ``ce + beta * (1 - p_t)^gamma * ce`` with ``ce = -log p_t``.

    Args:
        logits: ``[N, C, H, W]`` float32/float16/bfloat16 (float64 for checks),
            any strides, CPU or CUDA.
        target: ``[N, H, W]`` int64 or uint8 class indices; pixels equal to
            ``ignore_index`` are left out. Any other value outside ``[0, C)``
            is an error.
        gamma, beta: focal exponent (>= 0) and weight of the focal term.
        reduction: ``"mean"`` (over valid pixels; 0 when there are none),
            ``"sum"``, or ``"none"`` (``[N, H, W]``, 0 at ignored pixels).
        check_targets: ``True`` (default): a target outside ``[0, C)`` that
            is not `ignore_index` raises an error naming its value and index
            (on CUDA this costs one host synchronisation per call).
            ``False``: for targets known to be valid (e.g. the driver's
            pseudo-labels): no check and no host synchronisation (the CUDA
            call is capturable in a CUDA graph); an out-of-range target is
            then counted as ignored.

    Returns:
        The loss, float32 (float64 for float64 logits). Differentiable w.r.t.
        ``logits``: the gradient is computed in the forward pass, in the
        logits' dtype, and backward only scales it.
    """
    require_tensor("focal_ce_loss", "logits", logits)
    require_tensor("focal_ce_loss", "target", target)
    code = reduction_code(reduction)
    require_kernels_for("focal_ce_loss", logits)
    compute_grad = torch.is_grad_enabled() and logits.requires_grad
    loss, _ = torch.ops.lse_fast.focal_ce_loss.default(
        logits, target, float(gamma), float(beta), int(ignore_index), code, compute_grad, bool(check_targets)
    )
    return loss


class FocalCELoss(torch.nn.Module):
    """Module form of :func:`focal_ce_loss`, a drop-in loss object."""

    def __init__(self, gamma=3.0, beta=0.1, ignore_index=255, reduction="mean", check_targets=True):
        super().__init__()
        # The op's own checks, now rather than at the first forward: its Meta
        # kernel on a 1-pixel meta tensor (no data, no device work).
        torch.ops.lse_fast.focal_ce_loss.default(
            torch.empty(1, 1, 1, 1, device="meta"), torch.empty(1, 1, 1, dtype=torch.int64, device="meta"),
            float(gamma), float(beta), int(ignore_index), reduction_code(reduction), False, bool(check_targets),
        )
        self.gamma, self.beta, self.ignore_index, self.reduction = float(gamma), float(beta), int(ignore_index), reduction
        self.check_targets = bool(check_targets)

    def forward(self, logits, target):
        return focal_ce_loss(
            logits, target, gamma=self.gamma, beta=self.beta, ignore_index=self.ignore_index, reduction=self.reduction,
            check_targets=self.check_targets,
        )

    def extra_repr(self):
        return f"gamma={self.gamma}, beta={self.beta}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"


# The fake (torch.compile) is the C++ Meta kernel in
# csrc/torch/focal_ce_loss_op.cpp, which runs the same checks as the CPU and
# CUDA kernels.


def _setup_context(ctx, inputs, output):
    _, grad = output
    ctx.mark_non_differentiable(grad)
    # grad_logits never receives a gradient: do not let autograd fill a
    # logits-sized zeros tensor for it.
    ctx.set_materialize_grads(False)
    ctx.reduction = inputs[5]
    ctx.save_for_backward(grad)


def _backward(ctx, grad_loss, _grad_of_grad):
    (grad,) = ctx.saved_tensors
    if grad.numel() == 0 and grad.dim() == 1:
        raise RuntimeError(
            "lse_fast.focal_ce_loss: backward called, but the gradient was not computed in the forward "
            "pass (logits did not require grad, or grad mode was off)"
        )
    if grad_loss is None:
        return None, None, None, None, None, None, None, None
    if ctx.reduction == 0:
        # Multiply in the wider dtype and round once.
        return (grad * grad_loss.unsqueeze(1)).to(grad.dtype), None, None, None, None, None, None, None
    if _is_exactly_one(grad_loss):
        # loss.backward(): the forward already holds the answer; hand it out
        # without a second logits-sized buffer (autograd clones it before any
        # in-place accumulation, since the graph still references it).
        return grad, None, None, None, None, None, None, None
    return grad * grad_loss, None, None, None, None, None, None, None  # 0-dim: keeps grad's dtype


def _is_exactly_one(t):
    # Only where reading the value is free: a plain CPU scalar. Tracing
    # (torch.compile, opcheck) passes tensor subclasses and takes the
    # general path.
    return type(t) is torch.Tensor and t.device.type == "cpu" and t.dim() == 0 and bool(t == 1)


torch.library.register_autograd("lse_fast::focal_ce_loss", _backward, setup_context=_setup_context)
