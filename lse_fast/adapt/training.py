"""Step 4 of a round (paper Sections 3.5-3.6): training on the patches of
the selected images with ``focal_ce_loss(gamma, beta)`` plus the plain CE
(``focal_ce_loss`` with beta = 0) on a source batch; a fresh optimiser per
round. Also the one training loop (:func:`train_loop`) and optimiser
builder (:func:`make_optimizer`) of the source stage. The round's seconds
in making patches and pseudo-labels (plus drawing the boxes) are its
"patches" stage, the rest of the training its "train" stage.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lse_fast.adapt import distributed, faults
from lse_fast.adapt.context import Context, View, autocast, infinite, seed_for
from lse_fast.adapt.patches import PatchPlan, make_patches, plan_patches
from lse_fast.adapt.progress import progress
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


def make_optimizer(model, kind, *, lr, momentum, weight_decay, head_lr_mult=1.0):
    """Adam (beta1 = `momentum`) or SGD with momentum over the trainable
    parameters of `model`, the head (``model.head_prefixes``) at
    `head_lr_mult` times the learning rate."""
    head = tuple(getattr(model, "head_prefixes", ()))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not (head and n.startswith(head))], "lr": lr},
              {"params": [p for n, p in named if head and n.startswith(head)], "lr": lr * head_lr_mult}]
    groups = [g for g in groups if g["params"]]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)


def poly_schedule(opt, total_steps):
    """Learning rate times (1 - step / total_steps) ** 0.9."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - min(s, total_steps - 1) / total_steps) ** 0.9)


def steps_per_round(cfg, num_patches: int) -> int:
    return max(1, math.ceil(cfg.epochs * num_patches / cfg.batch_size))


def patch_batches(ctx: Context, plan: PatchPlan, scores: ScoreResult, images, shuffle_gen):
    """Endless training batches (patches [B, 3, h, w], labels [B, h, w]) of
    ``batch_size`` patches: each loaded chunk of images becomes k patches per
    image, shuffled, and queued; making them is the round's "patches" stage."""
    bs = ctx.cfg.batch_size
    queue_x, queue_y = [], []
    for batch in infinite(images):
        with ctx.clock("patches"):
            patches, labels = make_patches(ctx, plan, scores, batch)
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


def supervised_loss(ctx: Context, model, x, y, gamma, beta, amp=None):
    """focal_ce_loss of the model's logits upsampled to the label size
    (forward under the run's autocast unless `amp` is False)."""
    with autocast(ctx.device, ctx.cfg.amp if amp is None else amp):
        out = model(x)
    out = F.interpolate(out.float(), size=tuple(y.shape[-2:]), mode="bilinear", align_corners=False)
    loss = ctx.ops.focal_ce_loss(out, y, gamma=gamma, beta=beta)
    return loss, out


def train_loop(ctx: Context, opt, sched, total_steps, step_loss, *, desc, where, note="", fault="train") -> list:
    """The one training loop (source stage and rounds): `total_steps`
    optimiser steps on ``step_loss(step)``; returns the losses. A NaN or
    infinite loss raises NonFiniteLoss ("`where`, step s/n: ...`note`")
    before its step is taken."""
    losses = []
    steps = progress(range(total_steps), total=total_steps, desc=desc, enabled=ctx.cfg.progress)
    for step in steps:
        loss = step_loss(step)
        value = check_loss(float(loss.detach()), f"{where}, step {step + 1}/{total_steps}{note}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(value)
        faults.point(fault)
        steps.note(f"loss {value:.4f}")
    return losses


def train_round(ctx: Context, model, scores: ScoreResult, selection, round_index: int) -> TrainResult:
    """Patches of the selected images made on the fly and trained on for
    ``epochs`` passes over them. In a distributed run each rank trains on
    its share of the selected images (:func:`distributed.share_plan`) under
    DistributedDataParallel, ``batch_size`` patches per rank and step, for
    ``epochs`` passes over the largest share."""
    cfg = ctx.cfg
    if selection.indices.numel() == 0:
        return TrainResult(float("nan"), 0, 0, [])
    with ctx.clock("patches"):
        plan = plan_patches(ctx, selection, round_index)
        num_patches = plan.num_patches
        plan = distributed.share_plan(ctx, plan, scores)
        if scores.probs is None:
            plan.teacher = copy.deepcopy(model).eval().requires_grad_(False)
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
    opt = make_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = poly_schedule(opt, total_steps) if cfg.lr_schedule == "poly" else None
    set_train_mode(model, cfg.freeze_bn)
    net = distributed.wrap(ctx, model)
    batches = patch_batches(ctx, plan, scores, images, shuffle_gen)

    def step_loss(step):
        px, py = next(batches)
        loss, _ = supervised_loss(ctx, net, px, py, cfg.gamma, cfg.beta)
        if source_batches is not None:
            sb = next(source_batches)
            sx, sy = sb["image"].to(ctx.device), sb["label"].to(ctx.device)
            source_loss, _ = supervised_loss(ctx, net, sx, sy, 0.0, 0.0)
            loss = loss + cfg.source_weight * source_loss
        return loss

    losses = train_loop(ctx, opt, sched, total_steps, step_loss, desc=f"train r{round_index}",
                        where=f"round {round_index}")
    batches.close()
    loss = distributed.mean_over_ranks(ctx, sum(losses) / len(losses))
    return TrainResult(loss, total_steps, num_patches, plan.examples)
