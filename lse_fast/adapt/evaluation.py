"""Step 5 of a round: mIoU of the adapted model on the target val split
(:func:`lse_fast.evaluate.evaluate`), over the classes both domains have.
With ``eval_size='native'`` (default) the published protocol: labels at
their native resolution, images fed at ``image_size``, logits upsampled
bilinearly to the labels (``align_corners`` False, or True with
``eval_align_corners``: ADVENT's protocol). Each result records its
protocol."""

from __future__ import annotations

import math

from lse_fast.adapt import distributed
from lse_fast.adapt.context import Context, amp_dtype
from lse_fast.evaluate import evaluate


def evaluate_kwargs(ctx: Context) -> dict:
    """The run's evaluation protocol as keyword arguments of
    :func:`lse_fast.evaluate.evaluate` (shared by the evaluation and the
    export of predictions, so the maps written are the maps scored)."""
    cfg = ctx.cfg
    return dict(num_classes=cfg.num_classes, class_names=ctx.class_names, device=ctx.device,
                autocast=amp_dtype(ctx.device, cfg.amp) or False,
                input_size=tuple(cfg.image_size) if cfg.eval_size == "native" else None,
                align_corners=cfg.eval_align_corners)


def evaluate_target(ctx: Context, model) -> dict:
    cfg = ctx.cfg
    res = evaluate(model, ctx.val_loader, progress=ctx.progress, **evaluate_kwargs(ctx))
    res = distributed.merge_evaluation(ctx, res)  # confusion matrices summed over ranks
    iou = [float(v) for v in res["iou"]]
    vals = [iou[c] for c in ctx.classes if not math.isnan(iou[c])]
    miou = sum(vals) / len(vals) if vals else float("nan")
    return {"miou": miou, "per_class_iou": iou, "miou19": float(res["miou"]) if cfg.num_classes == 19 else math.nan,
            "miou16": float(res["miou16"]), "miou13": float(res["miou13"]), "protocol": protocol(cfg)}


def protocol(cfg) -> dict:
    """How the driver evaluates (recorded with every result)."""
    native = cfg.eval_size == "native"
    return {"labels": "native resolution" if native else "resized to image_size (nearest)",
            "input_size": list(cfg.image_size), "train_size": list(cfg.image_size),
            "upsampling": f"bilinear, align_corners={bool(cfg.eval_align_corners)}",
            "align_corners": bool(cfg.eval_align_corners), "scales": [1.0], "flip": False}
