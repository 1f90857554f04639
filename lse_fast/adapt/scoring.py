"""Step 1 of a round (paper Sections 3.2-3.3): every target train image
scored once without gradients.

``ops.score(logits, size=image_size)`` scores the logits' bilinear
upsampling without materialising it; kept are the per-image per-class sums
of every image (three [N, C] tables, 24 bytes per image and class) and
the network's softmax (at its output stride) of the images that can still
be selected (:func:`lse_fast.selection.candidates`),
never a map of every image. Those maps are held up to ``probs_ram_budget``
GiB; a set whose candidates need more keeps none (``probs`` is None) and the
patch step recomputes the maps of the selected images. Host RAM of the step
is therefore at most the tables + the budget + one scoring batch of maps,
whatever the number of images.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch

from lse_fast import selection as sel
from lse_fast.adapt import distributed, faults
from lse_fast.adapt.context import Context, autocast, log
from lse_fast.adapt.progress import progress


@dataclass
class ScoreResult:
    class_pixels: torch.Tensor  # int64 [N, C]
    class_confidence: torch.Tensor  # float64 [N, C]
    class_entropy: torch.Tensor  # float64 [N, C]
    probs: typing.Optional[dict]  # {target index: float32 [C, h, w] on the CPU} of candidates; None: recompute
    num_images: int
    peak_map_bytes: int = 0  # largest total of maps held (after adding a batch, before pruning)


def target_probs(ctx: Context, model, x):
    """The softmax [N, C, h, w] (float32) of `model` on images `x`, computed
    as while scoring (eval mode, no gradient, the run's autocast)."""
    with torch.no_grad(), autocast(ctx.device, ctx.cfg.amp):
        logits = model(x)
    return torch.softmax(logits.float(), dim=1)


def _map_bytes(probs):
    return sum(p.numel() * p.element_size() for p in probs.values())


def score_target(ctx: Context, model, portion: float) -> ScoreResult:
    """Scores the whole target train split with `model` (eval mode); in a
    distributed run each rank scores its shard and the tables are combined
    (:func:`distributed.gather_scores`), so every rank returns the same
    tables and the probabilities of the candidates it scored."""
    cfg, ops = ctx.cfg, ctx.ops
    n = len(ctx.target_view)
    c = cfg.num_classes
    pixels = torch.zeros(n, c, dtype=torch.int64)
    conf = torch.zeros(n, c, dtype=torch.float64)
    ent = torch.zeros(n, c, dtype=torch.float64)
    probs = {}
    budget = int(cfg.probs_ram_budget * 2**30)
    keep_maps = budget > 0
    peak = 0
    kmax = sel.share(n, portion, max(len(ctx.classes), 1), cfg.share_rounding) + 1
    loader = ctx.loader(ctx.target_view, batch_size=cfg.score_batch_size, size=cfg.image_size, shard=True)
    scored = []
    model.eval()
    with torch.no_grad():
        for batch in progress(loader, total=len(loader), desc="score", unit="batches", enabled=cfg.progress):
            x = batch["image"].to(ctx.device)
            idx = batch["index"].cpu()
            scored.extend(idx.tolist())
            with autocast(ctx.device, cfg.amp):
                logits = model(x)
            logits = logits.float()
            # The logits' bilinear upsampling to the image size is scored (the
            # authors' code does so), composed into the op's taps rather than
            # materialised. crop_pseudo_labels filters the upsampled softmax
            # instead, whose entropy is slightly higher near class boundaries;
            # scoring that map was measured and lowered the built-in run's
            # mIoU (README).
            s = ops.score(logits, size=tuple(cfg.image_size))
            pixels[idx] = s.class_pixels.cpu()
            conf[idx] = s.class_confidence.cpu().double()
            if cfg.entropy_norm == "minmax":
                ent[idx] = sel.minmax_class_entropy_sums(s, c).cpu()
            else:
                ent[idx] = s.class_entropy.cpu().double()
            faults.point("score")
            if not keep_maps:
                continue
            p = torch.softmax(logits, dim=1).cpu()
            for j, i in enumerate(idx.tolist()):
                probs[i] = p[j].clone()
            peak = max(peak, _map_bytes(probs))
            keep = set(sel.candidates(pixels, conf, kmax, classes=ctx.classes).tolist())
            for i in [i for i in probs if i not in keep]:
                del probs[i]
            if _map_bytes(probs) > budget:
                log(f"[score] the candidates' probability maps exceed probs_ram_budget "
                    f"({cfg.probs_ram_budget:g} GiB): none kept, the selected images' maps are recomputed")
                probs, keep_maps = {}, False
    pixels, conf, ent = distributed.gather_scores(ctx, pixels, conf, ent, scored)
    if distributed.current().enabled:
        # Every rank keeps its maps or none does (a rank over its budget makes
        # all of them recompute), so the patch step takes one path everywhere.
        dropped = distributed.sum_tensor(ctx, torch.tensor([0 if keep_maps else 1], dtype=torch.int64))
        if int(dropped.item()) > 0:
            probs, keep_maps = {}, False
        keep = set(sel.candidates(pixels, conf, kmax, classes=ctx.classes).tolist())
        for i in [i for i in probs if i not in keep]:
            del probs[i]
    return ScoreResult(pixels, conf, ent, probs if keep_maps else None, n, peak)
