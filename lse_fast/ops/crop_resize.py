"""Batched crop-resize of images, probability maps and masks: the
scale-invariant examples of LSE (paper Section 3.4) for a whole batch of
boxes in one launch."""

import torch

from lse_fast._extension import require_kernels_for
from lse_fast.ops.arguments import mode_code, require_bool, require_tensor, size_list


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


def on_device_of(t, reference):
    """`t` moved to the device of `reference` when `t` is on the CPU (which
    the crop ops allow for boxes and thresholds), else `t` as it is."""
    return t.to(reference.device) if t.device.type == "cpu" and reference.device.type != "cpu" else t


# The fakes (torch.compile) run the ops' C++ Meta kernels, which hold the
# checks, through their Meta-only twins: boxes may live on the CPU while the
# input is on a GPU, and FakeTensor gives a C++ Meta kernel's output the
# device its tensor arguments share, so the twin gets them on one device.
@torch.library.register_fake("lse_fast::crop_resize")
def _crop_resize_fake(input, boxes, size, mode, align_corners):
    return torch.ops.lse_fast.crop_resize_meta.default(input, on_device_of(boxes, input), size, mode, align_corners)


@torch.library.register_fake("lse_fast::crop_resize_backward")
def _crop_resize_backward_fake(grad, boxes, input_size, mode, align_corners):
    return torch.ops.lse_fast.crop_resize_backward_meta.default(
        grad, on_device_of(boxes, grad), input_size, mode, align_corners
    )


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
