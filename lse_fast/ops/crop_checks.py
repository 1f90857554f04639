"""Argument checks shared by the crop ops, their fake implementations and
their references. Metadata only (shapes, dtypes, devices): the box values
are checked by the kernels (and by `check_box_values` in the references), so
these run unchanged under torch.compile."""

import torch

_FLOAT = (torch.float32, torch.float16, torch.bfloat16)
_NEAREST_ONLY = (torch.uint8, torch.bool, torch.int64)
MODES = {"bilinear": 0, "nearest": 1}


def _size_pair(op, name, size):
    if (
        not isinstance(size, (tuple, list, torch.Size))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise RuntimeError(f"lse_fast.{op}: `{name}` must be (height, width) with positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def check_boxes(op, boxes, input):
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"lse_fast.{op}: `boxes` must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise RuntimeError(
            f"lse_fast.{op}: `boxes` must have shape [K, 5] with rows (batch_index, x1, y1, x2, y2), "
            f"got shape {list(boxes.shape)}"
        )
    if boxes.dtype != torch.float32:
        raise RuntimeError(f"lse_fast.{op}: `boxes` must be float32, got {boxes.dtype}")
    if boxes.device.type != "cpu" and boxes.device != input.device:
        raise RuntimeError(
            f"lse_fast.{op}: `boxes` must be on the CPU or on the input's device ({input.device}), got {boxes.device}"
        )


def check_crop_resize_input(input, boxes, size, mode, align_corners, allow_float64=False):
    """Checks the arguments of crop_resize; returns (out_height, out_width)."""
    op = "crop_resize"
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"lse_fast.{op}: `input` must be a torch.Tensor, got {type(input).__name__}")
    if mode not in MODES:
        raise RuntimeError(f"lse_fast.{op}: `mode` must be 'bilinear' or 'nearest', got {mode!r}")
    if not isinstance(align_corners, bool):
        raise RuntimeError(f"lse_fast.{op}: `align_corners` must be a bool, got {align_corners!r}")
    float_ok = _FLOAT + ((torch.float64,) if allow_float64 else ())
    if input.dim() == 4:
        ok = float_ok + (torch.uint8,)
        if input.dtype not in ok:
            raise RuntimeError(
                f"lse_fast.{op}: `input` [N, C, H, W] must be float32, float16, bfloat16 or uint8, got {input.dtype}"
            )
    elif input.dim() == 3:
        ok = float_ok + _NEAREST_ONLY
        if input.dtype not in ok:
            raise RuntimeError(
                f"lse_fast.{op}: `input` [N, H, W] must be uint8, bool, int64 or a float type, got {input.dtype}"
            )
    else:
        raise RuntimeError(
            f"lse_fast.{op}: `input` must be [N, C, H, W] (images, probability maps) or [N, H, W] "
            f"(masks, labels), got shape {list(input.shape)}"
        )
    if mode == "bilinear" and input.dtype not in float_ok:
        raise RuntimeError(
            f"lse_fast.{op}: mode='bilinear' needs a floating-point `input`; {input.dtype} input "
            "(labels, masks, uint8 images) requires mode='nearest', which is exact"
        )
    check_boxes(op, boxes, input)
    if input.shape[-1] == 0 or input.shape[-2] == 0:
        raise RuntimeError(f"lse_fast.{op}: `input` has an empty image (shape {list(input.shape)})")
    return _size_pair(op, "size", size)


def check_crop_pseudo_labels_input(probs, boxes, size, thresholds, image_size, ignore_index, allow_float64=True):
    """Checks the arguments of crop_pseudo_labels; returns (oh, ow, (H, W))."""
    op = "crop_pseudo_labels"
    if not isinstance(probs, torch.Tensor):
        raise TypeError(f"lse_fast.{op}: `probs` must be a torch.Tensor, got {type(probs).__name__}")
    if probs.dim() != 4:
        raise RuntimeError(f"lse_fast.{op}: `probs` must have shape [N, C, h, w], got shape {list(probs.shape)}")
    float_ok = _FLOAT + ((torch.float64,) if allow_float64 else ())
    if probs.dtype not in float_ok:
        raise RuntimeError(f"lse_fast.{op}: `probs` must be float32, float16 or bfloat16, got {probs.dtype}")
    n, c, h, w = probs.shape
    if c == 0 or h == 0 or w == 0:
        raise RuntimeError(f"lse_fast.{op}: `probs` must have C, h, w > 0, got shape {list(probs.shape)}")
    if c > 255:
        raise RuntimeError(f"lse_fast.{op}: uint8 pseudo-labels hold at most 255 classes, `probs` has {c}")
    check_boxes(op, boxes, probs)
    oh, ow = _size_pair(op, "size", size)
    hw = (h, w) if image_size is None else _size_pair(op, "image_size", image_size)
    if not isinstance(thresholds, torch.Tensor) or thresholds.shape != (c,):
        got = list(thresholds.shape) if isinstance(thresholds, torch.Tensor) else type(thresholds).__name__
        raise RuntimeError(f"lse_fast.{op}: `thresholds` must be a float32 tensor of shape [C] = [{c}], got {got}")
    if thresholds.dtype != torch.float32:
        raise RuntimeError(f"lse_fast.{op}: `thresholds` must be float32, got {thresholds.dtype}")
    if thresholds.device.type != "cpu" and thresholds.device != probs.device:
        raise RuntimeError(
            f"lse_fast.{op}: `thresholds` must be on the CPU or on the device of `probs` ({probs.device}), "
            f"got {thresholds.device}"
        )
    if not isinstance(ignore_index, int) or not 0 <= ignore_index <= 255:
        raise RuntimeError(f"lse_fast.{op}: `ignore_index` must be an int in [0, 255] (uint8 labels), got {ignore_index!r}")
    if ignore_index < c:
        raise RuntimeError(
            f"lse_fast.{op}: `ignore_index` ({ignore_index}) must not be a class index (C = {c})"
        )
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
