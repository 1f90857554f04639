"""--export: each round's pseudo-labels (of the selected images, whole
images at image_size) and the final model's predictions on the target val
split (at the labels' native resolution, the evaluation protocol) in the
official Cityscapes format, written by the one writer
(:class:`lse_fast.evaluate.writer.CityscapesWriter`)::

    export/predictions/{labelIds,color,trainIds}/<city>/<image name>.png
    export/round_<r>/pseudo_labels/{labelIds,color,trainIds}/<city>/<image name>.png

labelIds is what cityscapesscripts' evaluator reads (docs/evaluation.md);
pixels a pseudo-label leaves out are 255 in trainIds, 0 ('unlabeled') in
labelIds and black in color. A 16-class (SYNTHIA) head's classes are
written as their Cityscapes ids.

The pseudo-labels are made by the function that makes the round's training
labels (:func:`lse_fast.selection.pseudo_labels`, with the run's
``entropy_norm`` and ``filter_interp``) on one box covering each image.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lse_fast import selection as sel
from lse_fast.adapt.context import Context, View
from lse_fast.adapt.evaluation import evaluate_kwargs
from lse_fast.adapt.runs import atomic_write
from lse_fast.adapt.scoring import ScoreResult, target_probs
from lse_fast.data import IGNORE_INDEX
from lse_fast.evaluate import evaluate
from lse_fast.evaluate.writer import FORMATS, TRAIN_ID_PALETTE, CityscapesWriter, to_train_ids

__all__ = ["TRAIN_ID_PALETTE", "export_predictions", "export_pseudo_labels", "to_train_ids", "whole_image_labels"]


def _writer(ctx: Context, directory: Path) -> CityscapesWriter:
    # The run directory is the driver's own: a round redone after --resume replaces its partial export.
    return CityscapesWriter(directory, num_classes=ctx.cfg.num_classes, formats=FORMATS, overwrite=True,
                            # atomic and signal-safe as every write of the run: a stopped run leaves no half PNG
                            save=lambda path, data: atomic_write(path, data, durable=False))


def whole_image_labels(ctx: Context, probs, thresholds):
    """The pseudo-labels [N, H, W] (uint8, 255 = left out) of whole images at
    image_size from their softmax maps `probs`: the round's training-label
    function with one box covering each image."""
    h, w = ctx.cfg.image_size
    boxes = torch.tensor([[j, 0.0, 0.0, float(w), float(h)] for j in range(probs.shape[0])], device=probs.device)
    return sel.pseudo_labels(probs, boxes, (h, w), thresholds.to(probs.device), image_size=(h, w),
                             entropy_norm=ctx.cfg.entropy_norm, filter_interp=ctx.cfg.filter_interp,
                             ignore_index=IGNORE_INDEX, ops=ctx.ops)


def export_pseudo_labels(ctx: Context, model, scores: ScoreResult, selection, thresholds, directory: Path) -> int:
    """Pseudo-labels of the selected images; returns the number of images written."""
    cfg = ctx.cfg
    chosen = selection.indices.tolist()
    if not chosen:
        return 0
    writer = _writer(ctx, directory)
    loader = ctx.loader(View(ctx.target_base, chosen), batch_size=cfg.score_batch_size, size=tuple(cfg.image_size))
    for batch in loader:
        pos = batch["index"].cpu().tolist()
        if scores.probs is not None and all(chosen[p] in scores.probs for p in pos):
            # (under torchrun a rank holds only the maps of the images it scored)
            probs = torch.stack([scores.probs[chosen[p]] for p in pos]).to(ctx.device)
        else:
            probs = target_probs(ctx, model, batch["image"].to(ctx.device))
        labels = whole_image_labels(ctx, probs, thresholds)
        writer.write_batch([ctx.target_base.image_path(chosen[p]) for p in pos], labels)
    return writer.written


def export_predictions(ctx: Context, model, directory: Path) -> int:
    """Predictions of `model` on the whole target val split, made and scored
    by :func:`lse_fast.evaluate.evaluate` under the run's evaluation
    protocol (the maps written are the maps scored); returns the number of
    images."""
    cfg = ctx.cfg
    writer = _writer(ctx, directory)
    val_size = None if cfg.eval_size == "native" else tuple(cfg.image_size)
    loader = ctx.loader(ctx.val, batch_size=cfg.score_batch_size, size=val_size)  # every image, on any rank
    evaluate(model, loader, **evaluate_kwargs(ctx),
             on_prediction=lambda batch, pred: writer.write_batch(
                 [ctx.val.image_path(i) for i in batch["index"].tolist()], pred))
    return writer.written
