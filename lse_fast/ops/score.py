"""Fused scoring: softmax -> max-prob, argmax, normalised entropy and
per-image per-class sums, in one pass over the logits."""

from typing import NamedTuple

import torch

from lse_fast._extension import require_kernels_for

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Scores(NamedTuple):
    """What `score` returns; the per-class fields are what class-based
    sorting and dynamic thresholds need (means = sums / class_pixels)."""

    confidence: torch.Tensor  #: float32 [N, H, W], max softmax probability
    label: torch.Tensor  #: int64 [N, H, W], argmax (lowest class wins a tie)
    entropy: torch.Tensor  #: float32 [N, H, W], entropy / log C in [0, 1]
    class_pixels: torch.Tensor  #: int64 [N, C], pixels labelled c
    class_confidence: torch.Tensor  #: float32 [N, C], sum of confidence over them
    class_entropy: torch.Tensor  #: float32 [N, C], sum of entropy over them


def check_score_input(logits: torch.Tensor) -> None:
    """The argument checks of the C++ op, for the fake implementation."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"lse_fast.score: `logits` must be a torch.Tensor, got {type(logits).__name__}")
    # Plain raises (not torch._check with closures) so torch.compile traces them.
    if logits.dim() != 4:
        raise RuntimeError(
            f"lse_fast.score: `logits` must have 4 dimensions [N, C, H, W], got shape {list(logits.shape)}"
        )
    if logits.dtype not in _FLOAT_DTYPES:
        raise RuntimeError(f"lse_fast.score: `logits` must be float32, float16 or bfloat16, got {logits.dtype}")
    if logits.shape[1] == 0:
        raise RuntimeError(
            "lse_fast.score: `logits` must have at least one class (size(1) = C > 0), "
            f"got shape {list(logits.shape)}"
        )


def score(logits: torch.Tensor) -> Scores:
    """Scores segmentation logits in one fused pass.

    Args:
        logits: ``[N, C, H, W]`` float32, float16 or bfloat16, any strides
            (contiguous, channels_last, sliced), on the CPU or a CUDA device.

    Returns:
        :class:`Scores`. Half-precision logits are accumulated in float32.
        Finite logits of any magnitude give finite results; NaN logits give
        NaN confidence and entropy. The outputs carry no gradient.
    """
    check_score_input(logits)
    require_kernels_for("score", logits)
    return Scores(*torch.ops.lse_fast.score.default(logits))


@torch.library.register_fake("lse_fast::score")
def _score_fake(logits):
    check_score_input(logits)
    n, c, h, w = logits.shape
    return (
        logits.new_empty((n, h, w), dtype=torch.float32),
        logits.new_empty((n, h, w), dtype=torch.int64),
        logits.new_empty((n, h, w), dtype=torch.float32),
        logits.new_empty((n, c), dtype=torch.int64),
        logits.new_empty((n, c), dtype=torch.float32),
        logits.new_empty((n, c), dtype=torch.float32),
    )


def _score_setup_context(ctx, inputs, output):
    # Statistics of an argmax: no output carries a gradient to the logits.
    ctx.mark_non_differentiable(*output)


def _score_backward(ctx, *grads):
    raise RuntimeError("lse_fast.score is not differentiable")


torch.library.register_autograd("lse_fast::score", _score_backward, setup_context=_score_setup_context)
