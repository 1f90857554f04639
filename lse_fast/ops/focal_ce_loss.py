"""Fused masked focal + cross-entropy loss (LSE paper, Eq. 4, 5, 7), forward
and backward in one pass over the logits."""

import torch

from lse_fast._extension import require_kernels_for

_LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_TARGET_DTYPES = (torch.int64, torch.uint8)
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def reduction_code(reduction):
    """The op's code of a reduction name (conversion by the wrappers)."""
    if reduction not in REDUCTIONS:
        raise RuntimeError(f"lse_fast.focal_ce_loss: `reduction` must be one of {sorted(REDUCTIONS)}, got {reduction!r}")
    return REDUCTIONS[reduction]


def check_focal_ce_meta(logits, target, gamma, reduction):
    """Metadata checks of lse_fast::focal_ce_loss (reduction as its code), for
    the fake and the reference: the C++ checks (csrc/torch/focal_ce_common.h)
    word for word and in their order."""
    op = "lse_fast.focal_ce_loss"
    if logits.dim() != 4:
        raise RuntimeError(f"{op}: `logits` must have 4 dimensions [N, C, H, W], got shape {list(logits.shape)}")
    if logits.dtype not in _LOGIT_DTYPES:
        raise RuntimeError(f"{op}: `logits` must be float32, float16, bfloat16 or float64, got {logits.dtype}")
    if logits.shape[1] == 0:
        raise RuntimeError(f"{op}: `logits` must have at least one class (size(1) = C > 0), got shape {list(logits.shape)}")
    if target.dim() != 3:
        raise RuntimeError(f"{op}: `target` must have 3 dimensions [N, H, W], got shape {list(target.shape)}")
    if target.dtype not in _TARGET_DTYPES:
        raise RuntimeError(f"{op}: `target` must be int64 or uint8, got {target.dtype}")
    n, _, h, w = logits.shape
    if tuple(target.shape) != (n, h, w):
        raise RuntimeError(
            f"{op}: `target` must have shape [N, H, W] = {[n, h, w]} to match logits "
            f"{list(logits.shape)}, got {list(target.shape)}"
        )
    if target.device != logits.device:
        raise RuntimeError(f"{op}: `target` must be on the same device as logits ({logits.device}), got {target.device}")
    if not gamma >= 0:
        raise RuntimeError(f"{op}: `gamma` must be >= 0, got {gamma:g}")
    if reduction not in (0, 1, 2):
        raise RuntimeError(f"{op}: `reduction` code must be 0 (none), 1 (mean) or 2 (sum), got {reduction}")


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
    for name, value in (("logits", logits), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"lse_fast.focal_ce_loss: `{name}` must be a torch.Tensor, got {type(value).__name__}")
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
        if not gamma >= 0:
            raise ValueError(f"FocalCELoss: `gamma` must be >= 0, got {gamma}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"FocalCELoss: `reduction` must be one of {sorted(REDUCTIONS)}, got {reduction!r}")
        self.gamma, self.beta, self.ignore_index, self.reduction = float(gamma), float(beta), int(ignore_index), reduction
        self.check_targets = bool(check_targets)

    def forward(self, logits, target):
        return focal_ce_loss(
            logits, target, gamma=self.gamma, beta=self.beta, ignore_index=self.ignore_index, reduction=self.reduction,
            check_targets=self.check_targets,
        )

    def extra_repr(self):
        return f"gamma={self.gamma}, beta={self.beta}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"


@torch.library.register_fake("lse_fast::focal_ce_loss")
def _focal_ce_loss_fake(logits, target, gamma, beta, ignore_index, reduction, compute_grad, check_targets=True):
    check_focal_ce_meta(logits, target, gamma, reduction)
    loss_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    n, _, h, w = logits.shape
    loss = logits.new_empty((n, h, w) if reduction == 0 else (), dtype=loss_dtype)
    grad = logits.new_empty(logits.shape) if compute_grad else logits.new_empty((0,))
    return loss, grad


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
