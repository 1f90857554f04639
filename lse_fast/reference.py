"""Pure-PyTorch references of every lse_fast op: the truth the tests compare
against, and the `--ops reference` path of the driver. Written for clarity,
in the way the method's public code computes these quantities."""

import math

import torch

from lse_fast.ops.focal_ce_loss import check_focal_ce_input
from lse_fast.ops.score import Scores, check_score_input


def score(logits: torch.Tensor) -> Scores:
    """Reference of :func:`lse_fast.ops.score`.

    Computes in float64 for float64 input (the accuracy oracle) and in
    float32 otherwise; accepts float64 unlike the fused op.
    """
    if logits.dtype != torch.float64:
        check_score_input(logits)
        x = logits.float()
    else:
        x = logits
    n, c, h, w = x.shape
    log_p = torch.log_softmax(x, dim=1)
    p = log_p.exp()
    label = x.argmax(dim=1)  # first maximum on ties
    confidence = p.gather(1, label.unsqueeze(1)).squeeze(1)
    if c > 1:
        entropy = (-(p * log_p).sum(dim=1) / math.log(c)).clamp(0.0, 1.0)
    else:
        entropy = torch.zeros_like(confidence)
    flat_label = label.reshape(n, -1)
    class_pixels = torch.zeros(n, c, dtype=torch.int64, device=x.device)
    class_pixels.scatter_add_(1, flat_label, torch.ones_like(flat_label))
    class_confidence = torch.zeros(n, c, dtype=x.dtype, device=x.device)
    class_confidence.scatter_add_(1, flat_label, confidence.reshape(n, -1))
    class_entropy = torch.zeros(n, c, dtype=x.dtype, device=x.device)
    class_entropy.scatter_add_(1, flat_label, entropy.reshape(n, -1))
    return Scores(confidence, label, entropy, class_pixels, class_confidence, class_entropy)


def focal_ce_loss(logits, target, *, gamma=3.0, beta=0.1, ignore_index=255, reduction="mean"):
    """Reference of :func:`lse_fast.ops.focal_ce_loss` (autograd gives its
    gradient). Computes in float32, or float64 for float64 logits."""
    check_focal_ce_input(logits, target, gamma, reduction)
    x = logits if logits.dtype == torch.float64 else logits.float()
    c = x.shape[1]
    target = target.long()
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= c))
    if bool(bad.any()):
        value = int(target[bad][0])
        raise RuntimeError(
            f"lse_fast.focal_ce_loss: `target` value {value} is outside [0, {c}) and is not ignore_index ({ignore_index})"
        )
    safe = torch.where(valid, target, torch.zeros_like(target))
    log_pt = torch.log_softmax(x, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    ce = -log_pt
    focal = (1 - log_pt.exp()).pow(gamma) * ce
    loss = torch.where(valid, ce + beta * focal, torch.zeros_like(ce))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp(min=1)
