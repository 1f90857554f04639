"""Fused scoring: softmax -> max-prob, argmax, normalised entropy and
per-image per-class sums, in one pass over the logits."""

from typing import NamedTuple

import torch

from lse_fast._extension import require_kernels_for
from lse_fast.ops.arguments import require_tensor, size_list


class Scores(NamedTuple):
    """What `score` returns; the per-class fields are what class-based
    sorting and dynamic thresholds need (means = sums / class_pixels)."""

    confidence: torch.Tensor  #: float32 [N, H, W], max softmax probability
    label: torch.Tensor  #: int64 [N, H, W], argmax (lowest class wins a tie)
    entropy: torch.Tensor  #: float32 [N, H, W], entropy / log C in [0, 1]
    class_pixels: torch.Tensor  #: int64 [N, C], pixels labelled c
    class_confidence: torch.Tensor  #: float32 [N, C], sum of confidence over them
    class_entropy: torch.Tensor  #: float32 [N, C], sum of entropy over them


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
    require_tensor("score", "logits", logits)
    require_kernels_for("score", logits)
    if size is None:
        return Scores(*torch.ops.lse_fast.score.default(logits))
    return Scores(*torch.ops.lse_fast.score_upsampled.default(logits, size_list("score", "size", size)))


# The fakes (torch.compile) are the C++ Meta kernels in csrc/torch/score_op.cpp,
# which run the same checks as the CPU and CUDA kernels.


def _score_setup_context(ctx, inputs, output):
    # Statistics of an argmax: no output carries a gradient to the logits.
    ctx.mark_non_differentiable(*output)


def _score_backward(ctx, *grads):
    raise RuntimeError("lse_fast.score is not differentiable")


torch.library.register_autograd("lse_fast::score", _score_backward, setup_context=_score_setup_context)
torch.library.register_autograd("lse_fast::score_upsampled", _score_backward, setup_context=_score_setup_context)
