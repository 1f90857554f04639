"""Argument conversion and metadata checks of the crop ops.

The C++ checks (csrc/torch/crop_common.h) are the eager checks. The
functions `check_*_meta` repeat their metadata part (shapes, dtypes,
devices), word for word and in the same order, for the fake (meta)
implementations under torch.compile; tests/test_census_ops.py asserts that
eager and fake errors agree. Box values are data: the kernels check them
(and `check_box_values` in the references)."""

import torch

MODES = {"bilinear": 0, "nearest": 1}
MAX_SIDE = 1 << 24  # the taps are computed in float, exact for indices up to 2^24
_FLOAT = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _fail(op, name, what):
    raise RuntimeError(f"lse_fast.{op}: `{name}` {what}")


# --- conversion (Python wrappers and references) ---------------------------


def require_tensor(op, name, value):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"lse_fast.{op}: `{name}` must be a torch.Tensor, got {type(value).__name__}")


def size_list(op, name, size):
    """(height, width) as a list of two ints; values are checked by the op."""
    if (
        not isinstance(size, (tuple, list, torch.Size))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise TypeError(f"lse_fast.{op}: `{name}` must be (height, width) as two ints, got {size!r}")
    return [int(size[0]), int(size[1])]


def mode_code(op, mode):
    if mode not in MODES:
        raise RuntimeError(f"lse_fast.{op}: `mode` must be 'bilinear' or 'nearest', got {mode!r}")
    return MODES[mode]


def require_bool(op, name, value):
    if not isinstance(value, bool):
        raise TypeError(f"lse_fast.{op}: `{name}` must be a bool, got {value!r}")


# --- metadata checks (mirror csrc/torch/crop_common.h) ---------------------


def check_out_size(op, size, name):
    if not (len(size) == 2 and all(0 < v <= MAX_SIDE for v in size)):
        _fail(op, name, f"must be (height, width) with sizes in [1, {MAX_SIDE}], got {list(size)}")
    return int(size[0]), int(size[1])


def check_boxes_meta(op, boxes, device):
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        _fail(op, "boxes", f"must have shape [K, 5] with rows (batch_index, x1, y1, x2, y2), got shape {list(boxes.shape)}")
    if boxes.dtype != torch.float32:
        _fail(op, "boxes", f"must be float32, got {boxes.dtype}")
    if boxes.device.type != "cpu" and boxes.device != device:
        _fail(op, "boxes", f"must be on the CPU or on the input's device ({device}), got {boxes.device}")


def check_crop_resize_meta(input, boxes, size, mode):
    """Metadata checks of lse_fast::crop_resize (4-d input, mode code);
    returns (oh, ow)."""
    op = "crop_resize"
    if input.dim() != 4:
        _fail(op, "input", "must have 4 dimensions [N, C, H, W] ([N, H, W] is taken by lse_fast.ops.crop_resize), "
              f"got shape {list(input.shape)}")
    if mode not in (0, 1):
        _fail(op, "mode", f"code must be 0 (bilinear) or 1 (nearest), got {mode}")
    dt = input.dtype
    if mode == 0 and dt not in _FLOAT:
        _fail(op, "input", f"must be float32, float16, bfloat16 or float64 for mode='bilinear', got {dt}; "
              "integer and bool inputs require mode='nearest'")
    if mode == 1 and dt not in _FLOAT + (torch.uint8, torch.bool, torch.int64):
        _fail(op, "input", f"must be float32, float16, bfloat16, float64, uint8, bool or int64, got {dt}")
    if input.shape[2] == 0 or input.shape[3] == 0:
        _fail(op, "input", f"has an empty image, shape {list(input.shape)}")
    oh, ow = check_out_size(op, size, "size")
    check_boxes_meta(op, boxes, input.device)
    return oh, ow


def check_crop_backward_meta(grad, boxes, input_size, mode):
    op = "crop_resize_backward"
    if len(input_size) != 4:
        _fail(op, "input_size", f"must be [N, C, H, W], got {list(input_size)}")
    if grad.dim() != 4:
        _fail(op, "grad", f"must have 4 dimensions [K, C, oh, ow], got shape {list(grad.shape)}")
    if mode not in (0, 1):
        _fail(op, "mode", f"code must be 0 or 1, got {mode}")
    if grad.dtype not in _FLOAT:
        _fail(op, "grad", f"must be float32, float16, bfloat16 or float64, got {grad.dtype}")
    check_boxes_meta(op, boxes, grad.device)
    if grad.shape[0] != boxes.shape[0] or grad.shape[1] != input_size[1]:
        _fail(op, "grad", f"must have shape [K, C, oh, ow] = [{boxes.shape[0]}, {input_size[1]}, oh, ow], "
              f"got {list(grad.shape)}")


def check_crop_pseudo_labels_meta(probs, boxes, size, thresholds, image_size, ignore_index):
    """Metadata checks of lse_fast::crop_pseudo_labels; returns (oh, ow, (H, W))."""
    op = "crop_pseudo_labels"
    if probs.dim() != 4:
        _fail(op, "probs", f"must have 4 dimensions [N, C, h, w], got shape {list(probs.shape)}")
    if probs.dtype not in _FLOAT:
        _fail(op, "probs", f"must be float32, float16, bfloat16 or float64, got {probs.dtype}")
    _, c, h, w = probs.shape
    if not (c > 0 and h > 0 and w > 0):
        _fail(op, "probs", f"must have C, h, w > 0, got shape {list(probs.shape)}")
    if c > 255:
        _fail(op, "probs", f"has {c} classes; uint8 pseudo-labels hold at most 255")
    if not (thresholds.dim() == 1 and thresholds.shape[0] == c and thresholds.dtype == torch.float32):
        _fail(op, "thresholds", f"must be float32 of shape [C] = [{c}], got {thresholds.dtype} {list(thresholds.shape)}")
    if thresholds.device.type != "cpu" and thresholds.device != probs.device:
        _fail(op, "thresholds", f"must be on the CPU or the device of probs ({probs.device}), got {thresholds.device}")
    if not (c <= ignore_index <= 255):
        _fail(op, "ignore_index", f"must be in [C, 255] = [{c}, 255], got {ignore_index}")
    oh, ow = check_out_size(op, size, "size")
    hw = check_out_size(op, image_size, "image_size")
    check_boxes_meta(op, boxes, probs.device)
    return oh, ow, hw


def check_box_values(op, boxes, n, h, w):
    """Data-dependent box checks (the kernels make the same ones)."""
    b = boxes.detach().cpu()
    for k in range(b.shape[0]):
        idx, x1, y1, x2, y2 = (float(v) for v in b[k])
        if not all(map(lambda v: v == v and abs(v) != float("inf"), (idx, x1, y1, x2, y2))):
            raise RuntimeError(f"lse_fast.{op}: `boxes` row {k} has a non-finite value: {b[k].tolist()}")
        if idx != int(idx) or not 0 <= idx < n:
            raise RuntimeError(f"lse_fast.{op}: `boxes` row {k}: batch index {idx:g} is not an integer in [0, {n})")
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise RuntimeError(
                f"lse_fast.{op}: `boxes` row {k} = (x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g}) must satisfy "
                f"0 <= x1 < x2 <= {w} and 0 <= y1 < y2 <= {h} (inside the {h}x{w} image)"
            )
