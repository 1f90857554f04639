"""--export: each round's pseudo-labels (of the selected images, whole
images at image_size) and the final model's predictions on the target val
split (at the labels' native resolution, the evaluation protocol) as
Cityscapes-format PNGs: ``<stem>_trainIds.png`` (8-bit trainIds, 255 =
ignore) and ``<stem>_color.png`` (Cityscapes colours, ignore black).

A 16-class (SYNTHIA) head's classes are written as their Cityscapes trainIds.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lse_fast.adapt.context import Context, View
from lse_fast.adapt.runs import atomic_write
from lse_fast.adapt.scoring import ScoreResult, target_probs
from lse_fast.data import SYNTHIA16_TRAIN_IDS, TRAIN_ID_COLORS
from lse_fast.evaluate import predict_labels

TRAIN_ID_PALETTE = np.zeros((256, 3), np.uint8)
TRAIN_ID_PALETTE[: len(TRAIN_ID_COLORS)] = np.array(TRAIN_ID_COLORS, np.uint8)


def to_train_ids(labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """uint8 [..., H, W] trainIds of class indices (255 kept)."""
    lab = labels.to("cpu", torch.int64).numpy()
    if num_classes == 16:
        lut = np.full(256, 255, np.uint8)
        lut[:16] = SYNTHIA16_TRAIN_IDS
        return lut[np.clip(lab, 0, 255)]
    return lab.astype(np.uint8)


def stem_of(image_path: str) -> str:
    name = Path(image_path).name
    for suffix in ("_leftImg8bit.png", ".png", ".jpg", ".jpeg"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def write_label_png(directory: Path, stem: str, train_ids: np.ndarray) -> None:
    """``<stem>_trainIds.png`` and ``<stem>_color.png`` of a uint8 [H, W] map."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, image in ((f"{stem}_trainIds.png", Image.fromarray(np.ascontiguousarray(train_ids), mode="L")),
                        (f"{stem}_color.png", Image.fromarray(TRAIN_ID_PALETTE[train_ids]))):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        atomic_write(directory / name, buf.getvalue(), durable=False)  # a stopped run leaves no half PNG


def export_pseudo_labels(ctx: Context, model, scores: ScoreResult, selection, thresholds, directory: Path) -> int:
    """Pseudo-labels of the selected images (the filter of the round applied
    to the whole image, i.e. ``crop_pseudo_labels`` with one box covering
    it); returns the number of images written."""
    cfg = ctx.cfg
    chosen = selection.indices.tolist()
    if not chosen:
        return 0
    h, w = cfg.image_size
    loader = ctx.loader(View(ctx.target_base, chosen), batch_size=cfg.score_batch_size, size=(h, w))
    thr = thresholds.to(ctx.device)
    for batch in loader:
        pos = batch["index"].cpu().tolist()
        if scores.probs is not None and all(chosen[p] in scores.probs for p in pos):
            # (under torchrun a rank holds only the maps of the images it scored)
            probs = torch.stack([scores.probs[chosen[p]] for p in pos]).to(ctx.device)
        else:
            probs = target_probs(ctx, model, batch["image"].to(ctx.device))
        boxes = torch.tensor([[j, 0.0, 0.0, float(w), float(h)] for j in range(len(pos))], device=ctx.device)
        labels = ctx.ops.crop_pseudo_labels(probs, boxes, (h, w), thr, image_size=(h, w))
        ids = to_train_ids(labels, cfg.num_classes)
        for j, p in enumerate(pos):
            write_label_png(directory, stem_of(ctx.target_base.image_path(chosen[p])), ids[j])
    return len(chosen)


def export_predictions(ctx: Context, model, directory: Path) -> int:
    """Predictions of `model` on the target val split, at the resolution of
    its labels (the evaluation protocol); returns the number of images."""
    cfg = ctx.cfg
    input_size = tuple(cfg.image_size) if cfg.eval_size == "native" else None
    amp = ("cuda", torch.bfloat16) if cfg.amp and ctx.device.type == "cuda" else None
    model.eval()
    n = 0
    with torch.no_grad():
        for batch in ctx.val_loader:
            image = batch["image"].to(ctx.device)
            pred = predict_labels(model, image, tuple(batch["label"].shape[-2:]), amp=amp,
                                  num_classes=cfg.num_classes, input_size=input_size, scales=(1.0,), flip=False)
            ids = to_train_ids(pred, cfg.num_classes)
            for j, i in enumerate(batch["index"].cpu().tolist()):
                write_label_png(directory, stem_of(ctx.val.image_path(i)), ids[j])
                n += 1
    return n
