"""Evaluation of a segmentation model over a labelled loader: mIoU over 19,
16 and 13 classes, as the published GTA5/SYNTHIA -> Cityscapes evaluations
compute it (logits upsampled bilinearly to the label resolution, then argmax;
pixels labelled 255 ignored)."""

import contextlib
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from lse_fast.metrics import CITYSCAPES_CLASSES, SYNTHIA_13, SYNTHIA_16, SegmentationMetric

_NAME = "lse_fast.evaluate"
# 16-class heads (SYNTHIA): channel i is trainId SYNTHIA_16[i]; the 13 classes by channel.
SYNTHIA16_NAMES = tuple(CITYSCAPES_CLASSES[t] for t in SYNTHIA_16)
SYNTHIA13_OF_16 = tuple(SYNTHIA_16.index(t) for t in SYNTHIA_13)


def _nanmean(values):
    kept = [v for v in values if v == v]
    return sum(kept) / len(kept) if kept else float("nan")


def class_summary(iou):
    """(mIoU over all, mIoU16, mIoU13) of per-class IoUs in the 19-class
    (Cityscapes trainIds) or 16-class (SYNTHIA heads) space; NaN where the
    subset does not apply."""
    if len(iou) == 19:
        return _nanmean(iou), _nanmean([iou[c] for c in SYNTHIA_16]), _nanmean([iou[c] for c in SYNTHIA_13])
    if len(iou) == 16:
        return _nanmean(iou), _nanmean(iou), _nanmean([iou[c] for c in SYNTHIA13_OF_16])
    return _nanmean(iou), float("nan"), float("nan")


def _model_device(model):
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _describe(value):
    return f"shape {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def _unpack(batch, index):
    if isinstance(batch, dict):
        if "image" not in batch:
            raise ValueError(f"{_NAME}: batch {index} from `loader` has no 'image' (keys: {sorted(batch)})")
        if "label" not in batch:
            raise ValueError(
                f"{_NAME}: batch {index} from `loader` has no 'label' (keys: {sorted(batch)}); "
                "evaluation needs a dataset with labels"
            )
        return batch["image"], batch["label"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(
        f"{_NAME}: `loader` must yield dicts with 'image' and 'label' (or (image, label) pairs), "
        f"got {type(batch).__name__} at batch {index}"
    )


def predict(logits, size, align_corners=False):
    """argmax of `logits` [N, C, h, w] upsampled bilinearly to `size` = (H, W),
    computed in float32: int64 [N, H, W]. `align_corners` False (the official
    and this project's protocol) or True (ADVENT's ``eval_UDA.py``, and the
    AdaptSegNet-era scripts written for PyTorch < 0.4)."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=bool(align_corners))
    return logits.argmax(1)


def _check_protocol(input_size, scales):
    if input_size is not None:
        try:
            h, w = (int(v) for v in input_size)
        except (TypeError, ValueError):
            raise ValueError(f"{_NAME}: `input_size` must be None or (H, W), got {input_size!r}") from None
        if h < 1 or w < 1:
            raise ValueError(f"{_NAME}: `input_size` must be positive, got {input_size!r}")
        input_size = (h, w)
    try:
        scales = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ValueError(f"{_NAME}: `scales` must be a sequence of positive numbers, got {scales!r}") from None
    if not scales or not all(s > 0 for s in scales):
        raise ValueError(f"{_NAME}: `scales` must be a non-empty sequence of positive numbers, got {scales!r}")
    return input_size, scales


def _forward(model, image, amp, num_classes):
    """Logits of `model` on `image`, checked."""
    with (torch.autocast(amp[0], dtype=amp[1]) if amp is not None else contextlib.nullcontext()):
        logits = model(image)
    if not isinstance(logits, torch.Tensor):
        raise ValueError(
            f"{_NAME}: the model returned {type(logits).__name__}; it must return one logits tensor [N, C, h, w]"
        )
    if logits.dim() != 4 or logits.shape[0] != image.shape[0] or logits.shape[1] != num_classes:
        raise ValueError(
            f"{_NAME}: the model returned logits of shape {list(logits.shape)}; expected "
            f"[{image.shape[0]}, num_classes={num_classes}, h, w]"
        )
    return logits


def predict_labels(model, image, size, *, amp, num_classes, input_size, scales, flip, align_corners=False):
    """Predicted labels [N, *size] of `model` on a batch (what `evaluate`
    scores; also used to export predictions): the image fed at `input_size` (default:
    as loaded) times each scale, optionally also flipped; logits upsampled
    bilinearly to the label size `size` (`align_corners` as in
    :func:`predict`). One pass: argmax of the logits; several: argmax of the
    summed softmax."""
    base = tuple(image.shape[-2:]) if input_size is None else tuple(input_size)
    passes = [(s, f) for s in scales for f in ((False, True) if flip else (False,))]
    total = None
    for s, flipped in passes:
        hw = (max(1, round(base[0] * s)), max(1, round(base[1] * s)))
        x = image if hw == tuple(image.shape[-2:]) else F.interpolate(image, size=hw, mode="bilinear",
                                                                         align_corners=False)
        logits = _forward(model, x.flip(-1) if flipped else x, amp, num_classes).float()
        if flipped:
            logits = logits.flip(-1)
        if len(passes) == 1:
            return predict(logits, size, align_corners)
        up = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=bool(align_corners))
        p = torch.softmax(up, dim=1)
        total = p if total is None else total.add_(p)
    return total.argmax(1)


def evaluate(model, loader, *, num_classes=19, class_names=None, device=None, autocast=False, progress=False,
             input_size=None, scales=(1.0,), flip=False, align_corners=False, on_prediction=None):
    """Evaluates `model` on every batch of `loader`.

    Args:
        model: maps images [N, 3, H, W] to logits [N, num_classes, h, w].
        loader: iterable of dicts {"image": float [N, 3, H, W], "label":
            int [N, H', W'] with 255 = ignore} (as ``lse_fast.data.loader``
            yields), or of (image, label) pairs.
        num_classes: classes of the logits and labels: 19 (Cityscapes
            trainIds), 16 (a SYNTHIA head: class i is trainId
            ``lse_fast.metrics.SYNTHIA_16[i]``, labels relabelled the same
            way, e.g. by ``lse_fast.data.to_synthia16``) or any other count.
        class_names: names for ``per_class`` (default: the 19 Cityscapes
            classes, or the 16 SYNTHIA ones, else "class_<i>").
        device: where to run (default: the model's device).
        autocast: run the model under autocast: True (bfloat16 on CPU,
            float16 on CUDA) or a dtype (e.g. torch.bfloat16, to match how a
            model was trained); the upsampling and argmax stay in float32.
            On a CPU it warns: bfloat16 autocast there is usually many times
            slower than float32 (one reported 2-core CPU evaluation took 80 s
            with it against 4.4 s without).
        progress: progress on stderr: a line updated in place on a
            terminal, one line at the end otherwise.
        input_size: (H, W) the images are resized to (bilinearly, on the
            device) before the model; default: as the loader delivers them.
            With a loader at native size (``size=None``) this is the
            published protocol: the model sees e.g. 512x1024, its logits are
            upsampled to the 1024x2048 labels.
        scales: input scales (multi-scale testing, e.g. (0.75, 1.0, 1.25)).
        flip: also run each scale on the horizontally flipped image.
            Several passes are fused by summing their softmax at the label
            resolution.
        align_corners: of the logits' bilinear upsampling to the labels:
            False (the official protocol, default) or True (ADVENT's
            ``eval_UDA.py``; see docs/evaluation.md).
        on_prediction: called as ``on_prediction(batch, pred)`` with each
            batch and its predicted labels (int64 [N, H, W], the maps that
            are scored), e.g. a :class:`lse_fast.evaluate.writer.CityscapesWriter`
            export.

    Returns:
        dict with "miou", "miou16", "miou13", "pixel_accuracy" (floats in
        [0, 1]; mIoU16/13 are NaN unless num_classes is 19 or 16), "iou" (list,
        NaN for a class absent from prediction and labels), "per_class"
        ({name: iou}), "confusion" (int64 [C, C] CPU tensor, rows = labels),
        "num_images" and "seconds".

    Runs under ``torch.no_grad()`` with the model in eval mode and restores
    the model's training mode afterwards.
    """
    if class_names is None:
        defaults = {19: CITYSCAPES_CLASSES, 16: SYNTHIA16_NAMES}
        class_names = list(defaults.get(num_classes, [f"class_{i}" for i in range(num_classes)]))
    class_names = list(class_names)
    if len(class_names) != num_classes:
        raise ValueError(f"{_NAME}: `class_names` has {len(class_names)} names, expected num_classes={num_classes}")
    device = _model_device(model) if device is None else torch.device(device)
    input_size, scales = _check_protocol(input_size, scales)
    use_autocast = autocast is not False and autocast is not None
    amp = None
    if use_autocast:
        dtype = autocast if isinstance(autocast, torch.dtype) else (
            torch.float16 if device.type == "cuda" else torch.bfloat16)
        amp = (device.type, dtype)
    if use_autocast and device.type == "cpu":
        warnings.warn(f"{_NAME}: autocast on the CPU runs the model in bfloat16, which is usually many times "
                      "slower than float32 there (and less accurate); pass autocast=False for CPU evaluation",
                      RuntimeWarning, stacklevel=2)
    live = progress and sys.stderr.isatty()
    metric = SegmentationMetric(num_classes)
    was_training = model.training
    total = len(loader) if hasattr(loader, "__len__") else None
    num_images = 0
    start = time.perf_counter()
    model.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                image, label = _unpack(batch, i)
                if not isinstance(image, torch.Tensor) or image.dim() != 4:
                    raise ValueError(f"{_NAME}: 'image' of batch {i} must be a [N, 3, H, W] tensor, got {_describe(image)}")
                if not isinstance(label, torch.Tensor) or label.dim() != 3 or label.shape[0] != image.shape[0]:
                    raise ValueError(
                        f"{_NAME}: 'label' of batch {i} must be a [N, H, W] tensor matching the {image.shape[0]} "
                        f"images, got {_describe(label)}"
                    )
                image = image.to(device, non_blocking=True)
                label = label.to(device, non_blocking=True)
                pred = predict_labels(model, image, tuple(label.shape[-2:]), amp=amp, num_classes=num_classes,
                                   input_size=input_size, scales=scales, flip=flip, align_corners=align_corners)
                metric.update(pred, label)
                if on_prediction is not None:
                    on_prediction(batch, pred)
                num_images += image.shape[0]
                if live:
                    of = f"/{total}" if total is not None else ""
                    print(f"\r{_NAME}: batch {i + 1}{of}, {num_images} images", end="", file=sys.stderr, flush=True)
    finally:
        model.train(was_training)
        if live:
            print(file=sys.stderr)
    if progress and not live:
        print(f"{_NAME}: {num_images} images in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    if num_images == 0:
        raise ValueError(f"{_NAME}: `loader` yielded no batch")
    result = metric.compute()
    result["miou"], result["miou16"], result["miou13"] = class_summary(result["iou"])
    result["per_class"] = dict(zip(class_names, result["iou"]))
    result["confusion"] = metric.confusion.cpu()
    result["num_images"] = num_images
    result["seconds"] = time.perf_counter() - start
    return result


def format_result(result, *, digits=1):
    """A printable table of `evaluate`'s result (IoU in %)."""
    lines = [f"{name:>14s}  {100 * iou:5.{digits}f}" for name, iou in result["per_class"].items()]
    for key in ("miou", "miou16", "miou13"):
        value = result[key]
        if value == value:  # not NaN
            lines.append(f"{key:>14s}  {100 * value:5.{digits}f}")
    return "\n".join(lines)
