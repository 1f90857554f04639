"""Batched crop-resize of images, probability maps and masks, and
pseudo-labels straight from crops of low-resolution probabilities: the
scale-invariant examples of LSE (paper Section 3.4) for a whole batch of
boxes in one launch."""

import torch

from lse_fast._extension import require_kernels_for
from lse_fast.ops.crop_checks import MODES, check_crop_pseudo_labels_input, check_crop_resize_input


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
    oh, ow = check_crop_resize_input(input, boxes, size, mode, align_corners, allow_float64=True)
    require_kernels_for("crop_resize", input)
    if input.dim() == 3:
        return torch.ops.lse_fast.crop_resize.default(input.unsqueeze(1), boxes, [oh, ow], MODES[mode], align_corners)[:, 0]
    return torch.ops.lse_fast.crop_resize.default(input, boxes, [oh, ow], MODES[mode], align_corners)


def crop_pseudo_labels(probs, boxes, size, thresholds, *, image_size=None, ignore_index=255):
    """uint8 pseudo-labels of crops, computed from probabilities at any
    resolution without materialising the full-resolution map.

    Equals (up to float near-ties) the reference: ``P = upsample(probs,
    image_size, bilinear)``; ``E = entropy(P) / log C``; ``A = argmax P``;
    ``F = E <= thresholds[A]``; label = argmax of ``crop_resize(P, box,
    size)``, ``ignore_index`` where ``crop_resize(F, box, size, "nearest")``
    is 0.

    Args:
        probs: ``[N, C, h, w]`` softmax probabilities (float32/16/bf16), e.g.
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
    oh, ow, hw = check_crop_pseudo_labels_input(
        probs, boxes, size, thresholds, image_size, ignore_index, allow_float64=False
    )
    require_kernels_for("crop_pseudo_labels", probs)
    return torch.ops.lse_fast.crop_pseudo_labels.default(probs, boxes, [oh, ow], thresholds, list(hw), ignore_index)


@torch.library.register_fake("lse_fast::crop_resize")
def _crop_resize_fake(input, boxes, size, mode, align_corners):
    torch._check(input.dim() == 4, lambda: "lse_fast.crop_resize: `input` must be 4-d")
    k = boxes.shape[0]
    return input.new_empty((k, input.shape[1], size[0], size[1]))


@torch.library.register_fake("lse_fast::crop_resize_backward")
def _crop_resize_backward_fake(grad, boxes, input_size, mode, align_corners):
    return grad.new_empty(tuple(input_size))


@torch.library.register_fake("lse_fast::crop_pseudo_labels")
def _crop_pseudo_labels_fake(probs, boxes, size, thresholds, image_size, ignore_index):
    return probs.new_empty((boxes.shape[0], size[0], size[1]), dtype=torch.uint8)


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
