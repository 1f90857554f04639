"""Fused scoring: softmax -> max-prob, argmax, normalised entropy and
per-image per-class sums, in one pass over the logits."""

from typing import NamedTuple

import torch

from lse_fast._extension import require_kernels_for
from lse_fast.ops.crop_checks import check_out_size, size_list

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
    """Metadata checks of lse_fast::score for the fake and the reference: the
    C++ checks (csrc/torch/score_common.h) word for word and in their order."""
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
    if logits.shape[1] > 2**31 - 1:
        raise RuntimeError(
            f"lse_fast.score: `logits` has too many classes ({logits.shape[1]}); at most 2^31 - 1 are supported"
        )


def check_score_upsampled_input(logits: torch.Tensor, size) -> tuple:
    """Metadata checks of lse_fast::score_upsampled (as csrc/torch/score_common.h)."""
    check_score_input(logits)
    if logits.shape[2] == 0 or logits.shape[3] == 0:
        raise RuntimeError(
            f"lse_fast.score: `logits` must have h, w > 0 to be upsampled, got shape {list(logits.shape)}"
        )
    return check_out_size("score", size, "size")


def score(logits: torch.Tensor, size=None) -> Scores:
    """Scores segmentation logits in one fused pass.

    Args:
        logits: ``[N, C, H, W]`` float32, float16 or bfloat16, any strides
            (contiguous, channels_last, sliced), on the CPU or a CUDA device.
        size: optional ``(H_out, W_out)``. When given, scores the bilinear
            upsampling (``align_corners=False``) of `logits` to that size
            without materialising it: equal, within float rounding, to
            ``score(F.interpolate(logits.float(), size, mode="bilinear"))``
            (each upsampled logit is blended in float32 from its four taps,
            whatever the input dtype). E.g. DeepLab's stride-8 logits scored
            at the label resolution. Each side in ``[1, 2^24]``.

    Returns:
        :class:`Scores`, per-pixel fields ``[N, H, W]`` (``[N, H_out,
        W_out]`` with `size`). Half-precision logits are accumulated in
        float32. Finite logits of any magnitude give finite results; NaN
        logits give NaN confidence and entropy. The outputs carry no gradient.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"lse_fast.score: `logits` must be a torch.Tensor, got {type(logits).__name__}")
    require_kernels_for("score", logits)
    if size is None:
        return Scores(*torch.ops.lse_fast.score.default(logits))
    return Scores(*torch.ops.lse_fast.score_upsampled.default(logits, size_list("score", "size", size)))


def _score_outputs(logits, h, w):
    n, c = logits.shape[:2]
    return (
        logits.new_empty((n, h, w), dtype=torch.float32),
        logits.new_empty((n, h, w), dtype=torch.int64),
        logits.new_empty((n, h, w), dtype=torch.float32),
        logits.new_empty((n, c), dtype=torch.int64),
        logits.new_empty((n, c), dtype=torch.float32),
        logits.new_empty((n, c), dtype=torch.float32),
    )


@torch.library.register_fake("lse_fast::score_upsampled")
def _score_upsampled_fake(logits, size):
    h, w = check_score_upsampled_input(logits, size)
    return _score_outputs(logits, h, w)


@torch.library.register_fake("lse_fast::score")
def _score_fake(logits):
    check_score_input(logits)
    return _score_outputs(logits, logits.shape[2], logits.shape[3])


def _score_setup_context(ctx, inputs, output):
    # Statistics of an argmax: no output carries a gradient to the logits.
    ctx.mark_non_differentiable(*output)


def _score_backward(ctx, *grads):
    raise RuntimeError("lse_fast.score is not differentiable")


torch.library.register_autograd("lse_fast::score", _score_backward, setup_context=_score_setup_context)
torch.library.register_autograd("lse_fast::score_upsampled", _score_backward, setup_context=_score_setup_context)
