"""Batched crop-resize of images, probability maps and masks, and
pseudo-labels straight from crops of low-resolution probabilities: the
scale-invariant examples of LSE (paper Section 3.4) for a whole batch of
boxes in one launch."""

import torch

from lse_fast._extension import require_kernels_for
from lse_fast.ops.crop_checks import (
    check_crop_backward_meta,
    check_crop_pseudo_labels_meta,
    check_crop_resize_meta,
    mode_code,
    require_bool,
    require_tensor,
    size_list,
)


def crop_resize_args(input, boxes, size, mode, align_corners):
    """The op's arguments converted for lse_fast::crop_resize: (4-d input,
    boxes, [oh, ow], mode code, align_corners, squeezed). Conversion only:
    the op checks the values."""
    op = "crop_resize"
    require_tensor(op, "input", input)
    require_tensor(op, "boxes", boxes)
    code = mode_code(op, mode)
    require_bool(op, "align_corners", align_corners)
    squeeze = input.dim() == 3
    return (input.unsqueeze(1) if squeeze else input), boxes, size_list(op, "size", size), code, align_corners, squeeze


def crop_pseudo_labels_args(probs, boxes, size, thresholds, image_size, ignore_index):
    """The op's arguments converted for lse_fast::crop_pseudo_labels."""
    op = "crop_pseudo_labels"
    for name, value in (("probs", probs), ("boxes", boxes), ("thresholds", thresholds)):
        require_tensor(op, name, value)
    hw = image_size
    if hw is None:  # default (h, w); a probs of the wrong rank is reported by the op
        hw = list(probs.shape[-2:]) if probs.dim() >= 2 else [1, 1]
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        raise TypeError(f"lse_fast.{op}: `ignore_index` must be an int, got {ignore_index!r}")
    return probs, boxes, size_list(op, "size", size), thresholds, size_list(op, "image_size", hw), ignore_index


def crop_resize(input, boxes, size, *, mode="bilinear", align_corners=False):
    """Crops every box out of its image and resizes it to `size`.

    Args:
        input: ``[N, C, H, W]`` (float32/16/bf16 images or probability maps
            (float64 too, e.g. for gradcheck), or
            uint8 images with ``mode="nearest"``) or ``[N, H, W]`` (masks and
            labels: uint8, bool, int64 with ``mode="nearest"``; float too). Any
            strides, channels_last included; CPU or CUDA.
        boxes: float32 ``[K, 5]``, rows ``(batch_index, x1, y1, x2, y2)`` in
            input pixels; the box covers ``[x1, x2) x [y1, y2)`` and may be
            fractional. On the CPU or on the input's device.
        size: ``(oh, ow)``.
        mode: ``"bilinear"`` or ``"nearest"`` (PyTorch's ``"nearest-exact"``:
            exact, keeps the dtype).
        align_corners: as in ``F.interpolate`` (bilinear only).

    Returns:
        ``[K, C, oh, ow]`` or ``[K, oh, ow]``, contiguous, the input's dtype.
        For an integer box equal to ``F.interpolate(input[b:b+1, :, y1:y2,
        x1:x2], size, mode, align_corners)``. Differentiable w.r.t. a
        floating-point `input`.
    """
    x, boxes, size, code, align_corners, squeeze = crop_resize_args(input, boxes, size, mode, align_corners)
    require_kernels_for("crop_resize", x)
    out = torch.ops.lse_fast.crop_resize.default(x, boxes, size, code, align_corners)
    return out[:, 0] if squeeze else out


def crop_pseudo_labels(probs, boxes, size, thresholds, *, image_size=None, ignore_index=255):
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

    Returns:
        uint8 ``[K, oh, ow]``.
    """
    args = crop_pseudo_labels_args(probs, boxes, size, thresholds, image_size, ignore_index)
    require_kernels_for("crop_pseudo_labels", probs)
    return torch.ops.lse_fast.crop_pseudo_labels.default(*args)


@torch.library.register_fake("lse_fast::crop_resize")
def _crop_resize_fake(input, boxes, size, mode, align_corners):
    oh, ow = check_crop_resize_meta(input, boxes, size, mode)
    return input.new_empty((boxes.shape[0], input.shape[1], oh, ow))


@torch.library.register_fake("lse_fast::crop_resize_backward")
def _crop_resize_backward_fake(grad, boxes, input_size, mode, align_corners):
    check_crop_backward_meta(grad, boxes, input_size, mode)
    return grad.new_empty(tuple(input_size))


@torch.library.register_fake("lse_fast::crop_pseudo_labels")
def _crop_pseudo_labels_fake(probs, boxes, size, thresholds, image_size, ignore_index):
    oh, ow, _ = check_crop_pseudo_labels_meta(probs, boxes, size, thresholds, image_size, ignore_index)
    return probs.new_empty((boxes.shape[0], oh, ow), dtype=torch.uint8)


def _crop_resize_setup_context(ctx, inputs, output):
    input, boxes, size, mode, align_corners = inputs
    ctx.save_for_backward(boxes)
    ctx.input_size = list(input.shape)
    ctx.mode = mode
    ctx.align_corners = align_corners


def _crop_resize_backward(ctx, grad):
    (boxes,) = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = torch.ops.lse_fast.crop_resize_backward.default(
            grad, boxes, ctx.input_size, ctx.mode, ctx.align_corners
        )
    return grad_input, None, None, None, None


def _crop_resize_backward_setup_context(ctx, inputs, output):
    grad, boxes, input_size, mode, align_corners = inputs
    ctx.save_for_backward(boxes)
    ctx.out_size = list(grad.shape[2:])
    ctx.mode = mode
    ctx.align_corners = align_corners


def _crop_resize_double_backward(ctx, grad_grad_input):
    # crop_resize is linear in its input: the backward's own gradient is the forward.
    (boxes,) = ctx.saved_tensors
    grad_grad = None
    if ctx.needs_input_grad[0]:
        grad_grad = torch.ops.lse_fast.crop_resize.default(
            grad_grad_input, boxes, ctx.out_size, ctx.mode, ctx.align_corners
        )
    return grad_grad, None, None, None, None


torch.library.register_autograd(
    "lse_fast::crop_resize", _crop_resize_backward, setup_context=_crop_resize_setup_context
)
torch.library.register_autograd(
    "lse_fast::crop_resize_backward",
    _crop_resize_double_backward,
    setup_context=_crop_resize_backward_setup_context,
)
