"""Step 4 of a round (paper Sections 3.5-3.6): training on the patches of
the selected images with ``focal_ce_loss(gamma, beta)`` plus the plain CE
(``focal_ce_loss`` with beta = 0) on a source batch; a fresh optimiser per
round. The seconds reported for "patches" are the time spent making patches
and pseudo-labels (plus drawing the boxes); "train" is the rest.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lse_fast.adapt import distributed
from lse_fast.adapt.context import Context, Timer, View, autocast, infinite, progress_bar, seed_for
from lse_fast.adapt.patches import PatchPlan, make_patches, plan_patches
from lse_fast.adapt.runs import kill_point
from lse_fast.adapt.scoring import ScoreResult


class NonFiniteLoss(RuntimeError):
    """A NaN or infinite training loss: the step is not taken and the round
    stops (the run directory keeps the last finished round)."""


def check_loss(value: float, where: str) -> float:
    """`value`, or NonFiniteLoss naming where it happened."""
    if not math.isfinite(value):
        raise NonFiniteLoss(
            f"lse_fast.adapt: {where}: the loss is {value} (not finite); the step was not taken and the round "
            "is stopped. Lower --lr, check the data (or run with --verify), then continue with --resume"
        )
    return value


@dataclass
class TrainResult:
    loss: float
    patches_seconds: float
    seconds: float
    steps: int
    patches: int
    examples: list


def set_train_mode(model, freeze_bn):
    """model.train(), with BatchNorm layers left in eval mode (running
    statistics used and kept) when freeze_bn."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def make_optimizer(cfg, params, lr=None):
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(cfg, opt, total_steps):
    if cfg.lr_schedule != "poly":
        return None
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - min(s, total_steps - 1) / total_steps) ** 0.9)


def steps_per_round(cfg, num_patches: int) -> int:
    return max(1, math.ceil(cfg.epochs * num_patches / cfg.batch_size))


def patch_batches(ctx: Context, plan: PatchPlan, scores: ScoreResult, images, shuffle_gen, timer: Timer):
    """Endless training batches (patches [B, 3, h, w], labels [B, h, w]) of
    ``batch_size`` patches: each loaded chunk of images becomes k patches per
    image, shuffled, and queued; the time spent making them is added to
    ``plan.seconds``."""
    bs = ctx.cfg.batch_size
    queue_x, queue_y = [], []
    for batch in infinite(images):
        t0 = timer.now()
        patches, labels = make_patches(ctx, plan, scores, batch)
        plan.seconds += timer.now() - t0
        perm = torch.randperm(patches.shape[0], generator=shuffle_gen).to(ctx.device)
        queue_x.append(patches[perm])
        queue_y.append(labels[perm])
        if sum(t.shape[0] for t in queue_x) < bs:
            continue
        xs, ys = torch.cat(queue_x), torch.cat(queue_y)
        start = 0
        while xs.shape[0] - start >= bs:
            yield xs[start:start + bs], ys[start:start + bs]
            start += bs
        queue_x, queue_y = [xs[start:]], [ys[start:]]


def supervised_loss(ctx: Context, model, x, y, gamma, beta):
    """focal_ce_loss of the model's logits upsampled to the label size."""
    with autocast(ctx.device, ctx.cfg.amp):
        out = model(x)
    out = F.interpolate(out.float(), size=tuple(y.shape[-2:]), mode="bilinear", align_corners=False)
    loss = ctx.ops.focal_ce_loss(out, y, gamma=gamma, beta=beta)
    return loss, out


def train_step(ctx: Context, model, opt, sched, target_batch, source_batches, where="a training step") -> float:
    """One optimiser step on a batch of target patches (and a source batch
    when the source term is on); returns the loss. A NaN or infinite loss
    raises NonFiniteLoss before the step is taken."""
    cfg = ctx.cfg
    px, py = target_batch
    loss, out = supervised_loss(ctx, model, px, py, cfg.gamma, cfg.beta)
    if ctx.verifier is not None:
        ctx.verifier.loss(out, py, cfg.gamma, cfg.beta)
    if source_batches is not None:
        sb = next(source_batches)
        sx, sy = sb["image"].to(ctx.device), sb["label"].to(ctx.device)
        source_loss, _ = supervised_loss(ctx, model, sx, sy, 0.0, 0.0)
        loss = loss + cfg.source_weight * source_loss
    value = check_loss(float(loss.detach()), where)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    return value


def train_round(ctx: Context, model, scores: ScoreResult, selection, round_index: int, timer: Timer) -> TrainResult:
    """Patches of the selected images made on the fly and trained on for
    ``epochs`` passes over them. In a distributed run each rank trains on
    its share of the selected images (:func:`distributed.share_plan`) under
    DistributedDataParallel, ``batch_size`` patches per rank and step, for
    ``epochs`` passes over the largest share."""
    cfg = ctx.cfg
    if selection.indices.numel() == 0:
        return TrainResult(float("nan"), 0.0, 0.0, 0, 0, [])
    t_start = timer.now()
    plan = plan_patches(ctx, selection, round_index)
    num_patches = plan.num_patches
    plan = distributed.share_plan(ctx, plan, scores)
    if scores.probs is None:
        plan.teacher = copy.deepcopy(model).eval().requires_grad_(False)
    plan.seconds = timer.now() - t_start
    total_steps = steps_per_round(cfg, distributed.per_rank_patches(num_patches))
    chunk_images = max(1, math.ceil(cfg.batch_size / plan.k)) * 4
    images = ctx.loader(View(ctx.target_base, plan.chosen), batch_size=chunk_images, size=plan.size,
                        shuffle=True, seed=seed_for(cfg.seed, round_index, 2))
    source_batches = None
    if cfg.source_batch_size > 0 and cfg.source_weight != 0:
        source = ctx.loader(ctx.source, batch_size=cfg.source_batch_size, size=tuple(cfg.source_size),
                            shuffle=True, seed=seed_for(cfg.seed, round_index, 3), shard=True)
        source_batches = infinite(source)
    torch.manual_seed(seed_for(cfg.seed, round_index, 4))
    shuffle_gen = torch.Generator().manual_seed(seed_for(cfg.seed, round_index, 5))
    opt = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    sched = make_scheduler(cfg, opt, total_steps)
    set_train_mode(model, cfg.freeze_bn)
    net = distributed.wrap(ctx, model)
    batches = patch_batches(ctx, plan, scores, images, shuffle_gen, timer)
    losses = []
    bar = progress_bar(range(total_steps), total=total_steps, desc=f"train r{round_index}", enabled=ctx.progress)
    for step in bar:
        where = f"round {round_index}, step {step + 1}/{total_steps}"
        losses.append(train_step(ctx, net, opt, sched, next(batches), source_batches, where))
        kill_point("train")
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    batches.close()
    loss = distributed.mean_over_ranks(ctx, sum(losses) / len(losses))
    return TrainResult(loss, plan.seconds, timer.now() - t_start, total_steps, num_patches, plan.examples)
