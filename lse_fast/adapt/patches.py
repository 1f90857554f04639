"""Step 3 of a round (paper Sections 3.4-3.5): k random boxes of
``patch_scale`` times the image per selected image; image patches
(``crop_resize``) and their uint8 pseudo-labels (``crop_pseudo_labels`` from
the low-resolution probabilities kept while scoring) made on the fly for
each chunk of images the trainer loads. Nothing is written to disk.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field

import torch

from lse_fast import selection as sel
from lse_fast.adapt.context import Context, seed_for
from lse_fast.adapt.scoring import ScoreResult, target_probs
from lse_fast.data import IGNORE_INDEX
from lse_fast.patches import random_boxes

EXAMPLES = 4  # patches kept per round for the pseudo-label plot


@dataclass
class PatchPlan:
    """The boxes of a round: ``boxes`` [S * k, 5] with column 0 the image's
    position in ``chosen`` (rows p*k .. p*k+k-1 belong to chosen[p])."""

    chosen: list
    boxes: torch.Tensor
    k: int
    size: tuple
    thresholds: torch.Tensor  # float32 [C], NaN replaced by -1 (keeps nothing)
    teacher: typing.Optional[torch.nn.Module] = None  # frozen copy of the scoring model when maps are recomputed
    examples: list = field(default_factory=list)  # (image patch, pseudo-label) pairs on the CPU

    @property
    def num_patches(self) -> int:
        return len(self.chosen) * self.k


def plan_patches(ctx: Context, selection, round_index: int) -> PatchPlan:
    cfg = ctx.cfg
    size = tuple(cfg.image_size)
    chosen = selection.indices.tolist()
    g = torch.Generator().manual_seed(seed_for(cfg.seed, round_index, 1))
    boxes = random_boxes(len(chosen), size, k=cfg.patches_per_image, scale=cfg.patch_scale, generator=g)
    return PatchPlan(chosen, boxes, cfg.patches_per_image, size, selection.filter_thresholds())


def make_patches(ctx: Context, plan: PatchPlan, scores: ScoreResult, batch):
    """(image patches, pseudo-labels) of one loaded chunk of selected images
    (``batch["index"]`` = positions in ``plan.chosen``), on the device."""
    cfg, device = ctx.cfg, ctx.device
    k, size = plan.k, plan.size
    x = batch["image"].to(device)
    pos = batch["index"].cpu()
    rows = (pos[:, None] * k + torch.arange(k)[None, :]).flatten()
    local = plan.boxes[rows].clone()
    local[:, 0] = torch.arange(len(pos)).repeat_interleave(k).float()
    local = local.to(device)
    if scores.probs is not None:
        probs = torch.stack([scores.probs[plan.chosen[int(p)]] for p in pos]).to(device)
    else:  # over the RAM budget while scoring: the same maps, recomputed by the round's starting model
        probs = target_probs(ctx, plan.teacher, x)
    thresholds = plan.thresholds.to(device)
    patches = ctx.ops.crop_resize(x, local, size)
    labels = sel.pseudo_labels(probs, local, size, thresholds, image_size=size, entropy_norm=cfg.entropy_norm,
                               filter_interp=cfg.filter_interp, ignore_index=IGNORE_INDEX, ops=ctx.ops)
    for j in range(min(EXAMPLES - len(plan.examples), patches.shape[0])):
        plan.examples.append((patches[j].detach().cpu(), labels[j].cpu()))
    return patches, labels
