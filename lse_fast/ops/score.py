"""Fused scoring: softmax -> max-prob, argmax, normalised entropy and
per-image per-class sums, in one pass over the logits (`score`) or over
probabilities already in hand (`score_probs`)."""

from typing import NamedTuple

import torch

from lse_fast._extension import require_kernels_for
from lse_fast.ops.arguments import require_bool, require_tensor, size_list


class Scores(NamedTuple):
    """What `score` returns; the per-class fields are what class-based
    sorting and dynamic thresholds need (means = sums / class_pixels)."""

    confidence: torch.Tensor  #: float32 [N, H, W], max softmax probability
    label: torch.Tensor  #: int64 [N, H, W], argmax (lowest class wins a tie)
    entropy: torch.Tensor  #: float32 [N, H, W], entropy / log C in [0, 1]
    class_pixels: torch.Tensor  #: int64 [N, C], pixels labelled c
    class_confidence: torch.Tensor  #: float32 [N, C], sum of confidence over them
    class_entropy: torch.Tensor  #: float32 [N, C], sum of entropy over them


def score(logits: torch.Tensor, size=None, *, align_corners: bool = False) -> Scores:
    """Scores segmentation logits in one fused pass.

    Args:
        logits: ``[N, C, H, W]`` float32, float16 or bfloat16, any strides
            (contiguous, channels_last, sliced), on the CPU or a CUDA device.
        size: optional ``(H_out, W_out)``. When given, scores the bilinear
            upsampling of `logits` to that size without materialising it:
            equal, within float rounding, to ``score(F.interpolate(
            logits.float(), size, mode="bilinear",
            align_corners=align_corners))`` (each upsampled logit is blended
            in float32 from its four taps, whatever the input dtype). E.g.
            DeepLab's stride-8 logits scored at the label resolution. Each
            side in ``[1, 2^24]``.
        align_corners: F.interpolate's flag for the upsampling (``True`` as
            the LSE authors', CRST's and ESL's code; ``False``, the default,
            as mmseg/DAFormer and our evaluator). Only used with `size`.

    Returns:
        :class:`Scores`, per-pixel fields ``[N, H, W]`` (``[N, H_out,
        W_out]`` with `size`). Half-precision logits are accumulated in
        float32. Finite logits of any magnitude give finite results, and so
        do ``-inf`` logits (p = 0, 0 log 0 = 0) beside a finite one; NaN and
        ``+inf`` logits, and a pixel whose logits are all ``-inf``, give NaN
        confidence and entropy. With `size`, a tap of bilinear weight
        exactly 0 contributes nothing (a ``-inf`` there is not
        ``0 * -inf = NaN``; docs/api.md, the zero-weight-tap rule). The
        outputs carry no gradient.
    """
    require_tensor("score", "logits", logits)
    require_bool("score", "align_corners", align_corners)
    require_kernels_for("score", logits)
    if size is None:
        return Scores(*torch.ops.lse_fast.score.default(logits))
    return Scores(*torch.ops.lse_fast.score_upsampled.default(logits, size_list("score", "size", size), align_corners))


def score_probs(probs: torch.Tensor, size=None, *, align_corners: bool = False) -> Scores:
    """:func:`score` from probabilities (softmax outputs) instead of logits.

    confidence = max p, label = argmax p (lowest class wins a tie), entropy
    = -sum p log p / log C with 0 log 0 = 0 (exact for p = 0, no epsilon),
    and the same per-class sums. Use it when the code you port holds
    softmax outputs (CRST, ESL); never pass ``log(probs)`` to :func:`score`.

    Args:
        probs: ``[N, C, H, W]`` float32, float16 or bfloat16, any strides,
            CPU or CUDA. Not checked to lie in [0, 1] or to sum to 1.
        size: optional ``(H_out, W_out)``: scores the bilinear upsampling of
            the probabilities (as ESL does with its softmax outputs), equal
            within float rounding to ``score_probs(F.interpolate(
            probs.float(), size, mode="bilinear",
            align_corners=align_corners))``, never materialised.
        align_corners: F.interpolate's flag for the upsampling.

    Returns:
        :class:`Scores`. A NaN or infinite probability makes that pixel's
        confidence and entropy NaN.
    """
    require_tensor("score_probs", "probs", probs)
    require_bool("score_probs", "align_corners", align_corners)
    require_kernels_for("score_probs", probs)
    if size is None:
        return Scores(*torch.ops.lse_fast.score_probs.default(probs))
    return Scores(
        *torch.ops.lse_fast.score_probs_upsampled.default(probs, size_list("score_probs", "size", size), align_corners)
    )


# The fakes (torch.compile) are the C++ Meta kernels in csrc/torch/score_op.cpp,
# which run the same checks as the CPU and CUDA kernels.


def _score_setup_context(ctx, inputs, output):
    # Statistics of an argmax: no output carries a gradient to the logits.
    ctx.mark_non_differentiable(*output)


def _score_backward(ctx, *grads):
    raise RuntimeError("lse_fast.score is not differentiable")


torch.library.register_autograd("lse_fast::score", _score_backward, setup_context=_score_setup_context)
for _name in ("score_upsampled", "score_probs", "score_probs_upsampled"):
    torch.library.register_autograd(f"lse_fast::{_name}", _score_backward, setup_context=_score_setup_context)
