"""--oracle: the target-supervised upper bound of the paper's Table 3
("performance gap" = adapted mIoU minus oracle mIoU).

The oracle is the run's model trained by the source stage's own training
function (:func:`lse_fast.adapt.source.pretrain_source`: same optimiser,
schedule, steps, batch size and augmentation) on the target train split
with its labels instead of the source, from the same start (the
``--backbone`` weights when given, else the model's initialisation), then
evaluated like every round. It is cached under cache_dir like the source
model (its key names the target split), saved as checkpoints/oracle.pt and
recorded as metrics.json 'oracle'.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import torch

from lse_fast.adapt import distributed
from lse_fast.adapt.config import ConfigError
from lse_fast.adapt.context import Context, build_model, log, seed_for
from lse_fast.adapt.evaluation import evaluate_target
from lse_fast.adapt.runs import Run, atomic_torch_save
from lse_fast.adapt.source import load_backbone, pretrain_source, read_backbone


def check_oracle_data(ctx: Context) -> None:
    """ConfigError unless the target train split has labels."""
    if not getattr(ctx.target_base, "has_labels", False):
        raise ConfigError(f"lse_fast.adapt: --oracle trains on the target train split's labels, but "
                          f"{ctx.target_base!r} has none (Cityscapes: gtFine/train)")


def oracle_context(ctx: Context) -> Context:
    """A view of `ctx` whose 'source' is the labelled target train split at
    image_size (and whose cache key says so)."""
    cfg = dataclasses.replace(ctx.cfg, source=f"oracle:{ctx.cfg.target}", source_size=tuple(ctx.cfg.image_size))
    octx = copy.copy(ctx)
    octx.cfg = cfg
    octx.source = ctx.target_base
    return octx


def train_oracle(run: Run, ctx: Context, model) -> dict:
    """Trains (or reuses) the oracle, evaluates it and records it in
    ``run.metrics['oracle']``; `model` (the run's) is left untouched."""
    check_oracle_data(ctx)
    cfg = ctx.cfg
    t0 = time.perf_counter()
    torch.manual_seed(seed_for(cfg.seed, 0, 0))
    oracle = build_model(cfg, ctx.normalization if cfg.backbone else None)
    if cfg.backbone:
        state, _ = read_backbone(cfg)
        load_backbone(cfg, oracle, state)
    oracle = distributed.attach(ctx, oracle)
    oracle.to(ctx.device)
    octx = oracle_context(ctx)
    log(f"[oracle] training {cfg.model} on the labelled target train split ({len(ctx.target_base)} images), "
        f"the source stage's budget ({cfg.pretrain_iters} steps)")
    cached = pretrain_source(octx, oracle)
    result = evaluate_target(ctx, oracle)
    result["seconds"] = time.perf_counter() - t0
    result["cached_model"] = cached
    result["steps"] = cfg.pretrain_iters
    if distributed.current().is_main:
        atomic_torch_save({"round": "oracle", "model": oracle.state_dict(), "config": cfg.to_dict()},
                          run.path / "checkpoints" / "oracle.pt")
    run.metrics["oracle"] = result
    run.save_metrics()
    log(f"[oracle] mIoU {100 * result['miou']:.1f}% over {len(ctx.classes)} classes")
    return result
