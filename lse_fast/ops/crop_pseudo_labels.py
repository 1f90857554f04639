"""Pseudo-labels straight from crops of low-resolution probabilities (LSE
paper Section 3.4): the crop, the upsampling, the argmax and the entropy
filter in one pass, without materialising the full-resolution map."""

import torch

from lse_fast._extension import require_kernels_for
from lse_fast.ops.arguments import require_bool, require_int, require_tensor, size_list
from lse_fast.ops.crop_resize import on_device_of


def crop_pseudo_labels_args(probs, boxes, size, thresholds, image_size, ignore_index, align_corners=False):
    """The op's arguments converted for lse_fast::crop_pseudo_labels."""
    op = "crop_pseudo_labels"
    for name, value in (("probs", probs), ("boxes", boxes), ("thresholds", thresholds)):
        require_tensor(op, name, value)
    hw = image_size
    if hw is None:  # default (h, w); a probs of the wrong rank is reported by the op
        hw = list(probs.shape[-2:]) if probs.dim() >= 2 else [1, 1]
    require_int(op, "ignore_index", ignore_index)
    require_bool(op, "align_corners", align_corners)
    return (probs, boxes, size_list(op, "size", size), thresholds, size_list(op, "image_size", hw), ignore_index,
            align_corners)


def crop_pseudo_labels(probs, boxes, size, thresholds, *, image_size=None, ignore_index=255, align_corners=False):
    """uint8 pseudo-labels of crops, computed from probabilities at any
    resolution without materialising the full-resolution map.

    Equals (up to float near-ties) the reference: ``P = upsample(probs,
    image_size, bilinear)``; ``E = entropy(P) / log C``; ``A = argmax P``;
    ``F = E <= thresholds[A]``; label = argmax of ``crop_resize(P, box,
    size)``, ``ignore_index`` where ``crop_resize(F, box, size, "nearest")``
    is 0.

    Args:
        probs: ``[N, C, h, w]`` softmax probabilities (float32/16/bf16/64), e.g.
            the network's stride-8 output, or at full resolution.
        boxes: float32 ``[K, 5]`` in the pixel coordinates of `image_size`.
        size: ``(oh, ow)`` of the pseudo-labels.
        thresholds: float32 ``[C]``, the per-class normalised-entropy
            thresholds h_c.
        image_size: ``(H, W)`` of the images the boxes refer to; default ``(h, w)``.
        ignore_index: label of filtered pixels, in ``[C, 255]``.
        align_corners: F.interpolate's flag of both bilinear resamplings,
            the upsampling to `image_size` and the crop (``True`` as the
            LSE authors' code); the filter's nearest crop has no such flag.

    Returns:
        uint8 ``[K, oh, ow]``. A pixel whose resampled probabilities are not
        all finite (NaN or +-inf, at the crop pixel or at the filter's
        full-resolution pixel) is ``ignore_index``; a tap of bilinear weight
        exactly 0 is not read (docs/api.md).
    """
    args = crop_pseudo_labels_args(probs, boxes, size, thresholds, image_size, ignore_index, align_corners)
    require_kernels_for("crop_pseudo_labels", probs)
    return torch.ops.lse_fast.crop_pseudo_labels.default(*args)


# As crop_resize's fake: the C++ Meta kernel through its Meta-only twin,
# with boxes and thresholds on the device of probs.
@torch.library.register_fake("lse_fast::crop_pseudo_labels")
def _crop_pseudo_labels_fake(probs, boxes, size, thresholds, image_size, ignore_index, align_corners=False):
    return torch.ops.lse_fast.crop_pseudo_labels_meta.default(
        probs, on_device_of(boxes, probs), size, on_device_of(thresholds, probs), image_size, ignore_index,
        align_corners,
    )
