"""One LSE self-training round, stage by stage: score, select, patches,
train, evaluate (paper Sections 3.2-3.6, Algorithm 1).

* score: every target train image once (no_grad); logits upsampled to the
  image size go through ``ops.score``; kept are the per-image per-class sums
  of every image and the network's low-resolution softmax of the images that
  can still be selected (:func:`lse_fast.selection.candidates`), never a
  full-resolution map of the set.
* select: :func:`lse_fast.selection.select` on those sums.
* patches: k random boxes of ``patch_scale`` times the image per selected
  image; image patches (``crop_resize``) and their uint8 pseudo-labels
  (``crop_pseudo_labels`` from the low-resolution probabilities) are made on
  the fly for each chunk of images the trainer loads; nothing is written to
  disk. The seconds reported for "patches" are the time spent in those two
  ops (plus drawing the boxes); "train" is the rest of the training loop.
* train: ``focal_ce_loss(gamma, beta)`` on target patches plus the plain CE
  (``focal_ce_loss`` with beta=0) on a source batch, a fresh optimiser per
  round.
* eval: mIoU on the target val split.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time

import torch
import torch.nn.functional as F

from lse_fast import selection as sel

IGNORE = 255


# --------------------------------------------------------------------------- ops
class Ops:
    """The four ops of a round, fused (``lse_fast.ops``) or reference
    (``lse_fast.reference``)."""

    NAMES = ("score", "focal_ce_loss", "crop_resize", "crop_pseudo_labels")

    def __init__(self, kind: str):
        if kind == "fused":
            import lse_fast.ops as mod
        elif kind == "reference":
            import lse_fast.reference as mod
        else:
            raise ValueError(f"lse_fast.adapt: `ops` must be 'fused' or 'reference', got {kind!r}")
        self.kind = kind
        for name in self.NAMES:
            fn = getattr(mod, name, None)
            if fn is None:
                raise RuntimeError(
                    f"lse_fast.adapt: --ops {kind}: this lse_fast has no {mod.__name__}.{name}; "
                    "rebuild/update lse_fast (bash scripts/setup.sh)"
                )
            setattr(self, name, fn)


# --------------------------------------------------------------------------- verify
class Verifier:
    """Compares every fused op with its reference on the live batches of a
    run and keeps the largest deviation per op and field."""

    TOL = {
        ("score", "confidence"): 1e-5,
        ("score", "entropy"): 1e-5,
        ("score", "label_disagreement"): 1e-4,  # share of pixels (near-ties)
        ("score", "class_pixels_rel"): 1e-4,
        ("score", "class_confidence_rel"): 1e-4,
        ("score", "class_entropy_rel"): 1e-4,
        ("focal_ce_loss", "value_rel"): 1e-5,
        ("focal_ce_loss", "grad_rel"): 1e-4,  # relative to the largest gradient element
        ("crop_resize", "abs"): 1e-4,
        ("crop_pseudo_labels", "disagreement"): 1e-3,  # agreement >= 99.9%
    }

    def __init__(self):
        import lse_fast.ops as fused
        import lse_fast.reference as ref

        self.fused = fused
        self.ref = ref
        self.max = {}
        self.checks = 0

    def _rec(self, op, fieldname, value):
        value = float(value)
        key = (op, fieldname)
        d = self.max.setdefault(op, {})
        d[fieldname] = max(d.get(fieldname, 0.0), value)
        self.checks += 1
        tol = self.TOL[key]
        if not (value <= tol):
            raise RuntimeError(
                f"lse_fast.adapt --verify: fused {op} deviates from the reference: {fieldname} = {value:.3g} "
                f"> tolerance {tol:g}"
            )

    @staticmethod
    def _rel(a, b):
        a = a.double()
        b = b.double()
        return float(((a - b).abs() / b.abs().clamp(min=1.0)).max()) if a.numel() else 0.0

    def score(self, logits, fused):
        r = self.ref.score(logits)
        self._rec("score", "confidence", (fused.confidence - r.confidence).abs().max())
        self._rec("score", "entropy", (fused.entropy - r.entropy).abs().max())
        self._rec("score", "label_disagreement", (fused.label != r.label).double().mean())
        self._rec("score", "class_pixels_rel", self._rel(fused.class_pixels, r.class_pixels))
        self._rec("score", "class_confidence_rel", self._rel(fused.class_confidence, r.class_confidence))
        self._rec("score", "class_entropy_rel", self._rel(fused.class_entropy, r.class_entropy))

    def loss(self, logits, target, gamma, beta):
        x = logits.detach().float().requires_grad_(True)
        a = self.fused.focal_ce_loss(x, target, gamma=gamma, beta=beta)
        (ga,) = torch.autograd.grad(a, x)
        y = logits.detach().float().requires_grad_(True)
        b = self.ref.focal_ce_loss(y, target, gamma=gamma, beta=beta)
        (gb,) = torch.autograd.grad(b, y)
        a, b = float(a.detach()), float(b.detach())
        self._rec("focal_ce_loss", "value_rel", abs(a - b) / max(abs(b), 1e-12))
        scale = float(gb.abs().max()) if gb.numel() else 0.0
        self._rec("focal_ce_loss", "grad_rel", float((ga - gb).abs().max()) / scale if scale > 0 else 0.0)

    def crop_resize(self, images, boxes, size, fused_out):
        r = self.ref.crop_resize(images, boxes, size)
        self._rec("crop_resize", "abs", (fused_out.float() - r.float()).abs().max() if r.numel() else 0.0)

    def pseudo(self, probs, boxes, size, thresholds, image_size, fused_out):
        r = self.ref.crop_pseudo_labels(probs, boxes, size, thresholds, image_size=image_size)
        dis = (fused_out != r).double().mean() if r.numel() else 0.0
        self._rec("crop_pseudo_labels", "disagreement", dis)

    def report(self):
        return {"checks": self.checks, "max_deviation": self.max,
                "tolerance": {f"{op}.{f}": t for (op, f), t in self.TOL.items()}}


# --------------------------------------------------------------------------- helpers
class Timer:
    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def now(self):
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def seed_for(seed: int, round_index: int, stage: int) -> int:
    """Seeds derived from (run seed, round, stage): every round's randomness
    is independent of what ran before it, which is what makes --resume give
    the same result as an uninterrupted run."""
    return (int(seed) * 1_000_003 + int(round_index) * 7_919 + int(stage) * 104_729) % (2**31 - 1)


def autocast(device, enabled):
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def progress_bar(iterable, *, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)


def minmax_class_entropy(entropy, label, num_classes):
    """Authors' per-image per-class min-max normalisation of the entropy
    map: (E - min_c) / (max_c - min_c) over the pixels predicted c in the
    image, 0 where the class's entropy is constant (the authors' code
    divides by zero there). Returns the normalised map and per-class
    (min, max) [N, C]."""
    n = entropy.shape[0]
    e = entropy.reshape(n, -1).float()
    lab = label.reshape(n, -1)
    big = torch.full((n, num_classes), float("inf"), device=e.device)
    cmin = big.scatter_reduce(1, lab, e, reduce="amin", include_self=True)
    cmax = (-big).scatter_reduce(1, lab, e, reduce="amax", include_self=True)
    lo = cmin.gather(1, lab)
    hi = cmax.gather(1, lab)
    span = hi - lo
    norm = torch.where(span > 0, (e - lo) / span.clamp(min=1e-30), torch.zeros_like(e))
    return norm.reshape(entropy.shape), cmin, cmax


def pseudo_labels_torch(probs, boxes, size, thresholds, image_size, *, entropy_norm, filter_interp, ops):
    """Pseudo-labels for the authors' variants (pure PyTorch): the filter map
    from min-max normalised entropy and/or resized bilinearly (kept where
    the resized mask is > 0, which dilates the kept region). With
    entropy_norm='log_c' and filter_interp='nearest' it equals
    ``crop_pseudo_labels``."""
    p = probs.float()
    c = p.shape[1]
    if tuple(p.shape[2:]) != tuple(image_size):
        p = F.interpolate(p, size=tuple(image_size), mode="bilinear", align_corners=False)
    ent = torch.special.entr(p).sum(1) / math.log(c) if c > 1 else torch.zeros_like(p[:, 0])
    label = p.argmax(1)
    if entropy_norm == "minmax":
        ent, _, _ = minmax_class_entropy(ent, label, c)
    keep = (ent <= thresholds.to(p.device, torch.float32)[label]).to(torch.float32)
    crop_label = ops.crop_resize(p, boxes, size).argmax(1)
    if filter_interp == "bilinear":
        crop_keep = ops.crop_resize(keep.unsqueeze(1), boxes, size).squeeze(1) > 0
    else:
        crop_keep = ops.crop_resize(keep.to(torch.uint8), boxes, size, mode="nearest").bool()
    return torch.where(crop_keep, crop_label, torch.full_like(crop_label, IGNORE)).to(torch.uint8)


class View:
    """A label-free view of a dataset restricted to some indices: the target
    train split is adapted to without its labels, and the trainer loads only
    the selected images."""

    has_labels = False

    def __init__(self, dataset, indices=None):
        self.base = dataset
        self.indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        self.name = getattr(dataset, "name", type(dataset).__name__)
        self.classes = getattr(dataset, "classes", None)
        self.label_lut = getattr(dataset, "label_lut", None)
        self.label_channel = getattr(dataset, "label_channel", 0)

    def __len__(self):
        return len(self.indices)

    def image_path(self, i):
        return self.base.image_path(self.indices[int(i)])

    def label_path(self, i):
        return None

    def __repr__(self):
        return f"View({self.name!r}, {len(self)} images)"


# --------------------------------------------------------------------------- stages
class ScoreResult:
    def __init__(self, pixels, confidence, entropy, probs, num_images):
        self.class_pixels = pixels
        self.class_confidence = confidence
        self.class_entropy = entropy
        self.probs = probs  # {target index: float32 [C, h, w] on CPU}
        self.num_images = num_images


def score_target(ctx, model, portion):
    """Stage 1: scores the whole target train split."""
    cfg, ops = ctx.cfg, ctx.ops
    n = len(ctx.target_view)
    c = cfg.num_classes
    pixels = torch.zeros(n, c, dtype=torch.int64)
    conf = torch.zeros(n, c, dtype=torch.float64)
    ent = torch.zeros(n, c, dtype=torch.float64)
    probs = {}
    kmax = sel.share(n, portion, max(len(ctx.classes), 1), cfg.share_rounding) + 1
    loader = ctx.loader(ctx.target_view, batch_size=cfg.score_batch_size, size=cfg.image_size)
    model.eval()
    with torch.no_grad():
        for batch in progress_bar(loader, total=len(loader), desc="score", enabled=cfg.progress):
            x = batch["image"].to(ctx.device)
            idx = batch["index"].cpu()
            with autocast(ctx.device, cfg.amp):
                logits = model(x)
            logits = logits.float()
            # Logits upsampled to the image size (issue 7, and the authors' code).
            # crop_pseudo_labels filters the upsampled softmax instead, whose
            # entropy is slightly higher near class boundaries; scoring that
            # map (log of it) was measured and lowered the built-in run's
            # mIoU (README, "Running LSE").
            up = F.interpolate(logits, size=tuple(cfg.image_size), mode="bilinear", align_corners=False)
            s = ops.score(up)
            if ctx.verifier is not None and ops.kind == "fused":
                ctx.verifier.score(up, s)
            pixels[idx] = s.class_pixels.cpu()
            conf[idx] = s.class_confidence.cpu().double()
            if cfg.entropy_norm == "minmax":
                _, cmin, cmax = minmax_class_entropy(s.entropy, s.label, c)
                span = cmax - cmin
                e_sum = s.class_entropy.double() - s.class_pixels.double() * cmin.double().nan_to_num(posinf=0.0)
                e_sum = torch.where(span > 0, e_sum / span.double().clamp(min=1e-30), torch.zeros_like(e_sum))
                ent[idx] = e_sum.cpu()
            else:
                ent[idx] = s.class_entropy.cpu().double()
            p = torch.softmax(logits, dim=1).cpu()
            for j, i in enumerate(idx.tolist()):
                probs[i] = p[j].clone()
            keep = set(sel.candidates(pixels, conf, kmax, classes=ctx.classes).tolist())
            for i in [i for i in probs if i not in keep]:
                del probs[i]
    return ScoreResult(pixels, conf, ent, probs, n)


def select_images(ctx, scores, portion):
    """Stage 2: class-based sorting and dynamic thresholds."""
    cfg = ctx.cfg
    return sel.select(
        scores.class_pixels, scores.class_confidence, scores.class_entropy, portion,
        classes=ctx.classes, threshold_image=cfg.threshold_image, rounding=cfg.share_rounding,
    )


def _infinite(loader):
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("lse_fast.adapt: the source loader yields no batch")


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


def train_round(ctx, model, scores, selection, round_index, timer):
    """Stages 3 and 4: patches on the fly and training. Returns (mean loss,
    seconds in patch ops, seconds total, steps, patches, examples)."""
    cfg, ops, device = ctx.cfg, ctx.ops, ctx.device
    chosen = selection.indices.tolist()
    k = cfg.patches_per_image
    examples = []
    if not chosen:
        return dict(loss=float("nan"), patches_seconds=0.0, seconds=0.0, steps=0, patches=0, examples=examples)
    t_start = timer.now()
    size = tuple(cfg.image_size)
    from lse_fast.patches import random_boxes

    g = torch.Generator().manual_seed(seed_for(cfg.seed, round_index, 1))
    boxes = random_boxes(len(chosen), size, k=k, scale=cfg.patch_scale, generator=g)  # column 0: position in chosen
    thresholds = selection.filter_thresholds()
    fast_path = cfg.entropy_norm == "log_c" and cfg.filter_interp == "nearest"
    patch_seconds = timer.now() - t_start
    n_patches = len(chosen) * k
    total_steps = max(1, math.ceil(cfg.epochs * n_patches / cfg.batch_size))
    chunk_images = max(1, math.ceil(cfg.batch_size / k)) * 4
    view = View(ctx.target_base, chosen)
    img_loader = ctx.loader(view, batch_size=chunk_images, size=size, shuffle=True, seed=seed_for(cfg.seed, round_index, 2))
    src_iter = None
    if cfg.source_batch_size > 0:
        src_loader = ctx.loader(ctx.source, batch_size=cfg.source_batch_size, size=tuple(cfg.source_size),
                                shuffle=True, seed=seed_for(cfg.seed, round_index, 3))
        src_iter = _infinite(src_loader)
    torch.manual_seed(seed_for(cfg.seed, round_index, 4))
    shuffle_gen = torch.Generator().manual_seed(seed_for(cfg.seed, round_index, 5))
    opt = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    sched = None
    if cfg.lr_schedule == "poly":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - min(s, total_steps - 1) / total_steps) ** 0.9)
    set_train_mode(model, cfg.freeze_bn)

    def patch_batches():
        nonlocal patch_seconds
        buf_x, buf_y = [], []
        while True:
            for batch in img_loader:
                t0 = timer.now()
                x = batch["image"].to(device)
                pos = batch["index"].cpu()  # positions in `chosen`
                rows = (pos[:, None] * k + torch.arange(k)[None, :]).flatten()
                local = boxes[rows].clone()
                local[:, 0] = torch.arange(len(pos)).repeat_interleave(k).float()
                local = local.to(device)
                probs = torch.stack([scores.probs[chosen[int(p)]] for p in pos]).to(device)
                patches = ops.crop_resize(x, local, size)
                if fast_path:
                    labels = ops.crop_pseudo_labels(probs, local, size, thresholds.to(device), image_size=size)
                else:
                    labels = pseudo_labels_torch(probs, local, size, thresholds.to(device), size,
                                                 entropy_norm=cfg.entropy_norm, filter_interp=cfg.filter_interp,
                                                 ops=ops)
                if ctx.verifier is not None and ops.kind == "fused":
                    ctx.verifier.crop_resize(x, local, size, patches)
                    if fast_path:
                        ctx.verifier.pseudo(probs, local, size, thresholds.to(device), size, labels)
                if len(examples) < 4:
                    for j in range(min(4 - len(examples), patches.shape[0])):
                        examples.append((patches[j].detach().cpu(), labels[j].cpu()))
                patch_seconds += timer.now() - t0
                perm = torch.randperm(patches.shape[0], generator=shuffle_gen).to(device)
                buf_x.append(patches[perm])
                buf_y.append(labels[perm])
                have = sum(t.shape[0] for t in buf_x)
                if have >= cfg.batch_size:
                    xs, ys = torch.cat(buf_x), torch.cat(buf_y)
                    start = 0
                    while xs.shape[0] - start >= cfg.batch_size:
                        yield xs[start:start + cfg.batch_size], ys[start:start + cfg.batch_size]
                        start += cfg.batch_size
                    buf_x, buf_y = [xs[start:]], [ys[start:]]

    losses = []
    gen = patch_batches()
    bar = progress_bar(range(total_steps), total=total_steps, desc=f"train r{round_index}", enabled=cfg.progress)
    for _ in bar:
        px, py = next(gen)
        with autocast(device, cfg.amp):
            out = model(px)
        out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
        loss = ops.focal_ce_loss(out, py, gamma=cfg.gamma, beta=cfg.beta)
        if ctx.verifier is not None and ops.kind == "fused":
            ctx.verifier.loss(out, py, cfg.gamma, cfg.beta)
        if src_iter is not None and cfg.source_weight != 0:
            sb = next(src_iter)
            sx, sy = sb["image"].to(device), sb["label"].to(device)
            with autocast(device, cfg.amp):
                so = model(sx)
            so = F.interpolate(so.float(), size=tuple(sy.shape[-2:]), mode="bilinear", align_corners=False)
            loss = loss + cfg.source_weight * ops.focal_ce_loss(so, sy, gamma=0.0, beta=0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(float(loss.detach()))
        if cfg.progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    gen.close()
    total = timer.now() - t_start
    return dict(loss=sum(losses) / len(losses), patches_seconds=patch_seconds, seconds=total,
                steps=total_steps, patches=n_patches, examples=examples)


def evaluate_target(ctx, model):
    from lse_fast.evaluate import evaluate

    cfg = ctx.cfg
    res = evaluate(model, ctx.val_loader, num_classes=cfg.num_classes, class_names=ctx.class_names,
                   device=ctx.device, autocast=torch.bfloat16 if cfg.amp and ctx.device.type == "cuda" else False,
                   progress=cfg.progress)
    iou = [float(v) for v in res["iou"]]
    vals = [iou[c] for c in ctx.classes if not math.isnan(iou[c])]
    miou = sum(vals) / len(vals) if vals else float("nan")
    return {"miou": miou, "per_class_iou": iou, "miou19": float(res["miou"]),
            "miou16": float(res["miou16"]), "miou13": float(res["miou13"])}


def run_round(ctx, model, round_index, portion):
    """One round; returns its metrics entry (and pseudo-label examples)."""
    timer = Timer(ctx.device)
    seconds = {}
    t0 = timer.now()
    scores = score_target(ctx, model, portion)
    t1 = timer.now()
    seconds["score"] = t1 - t0
    selection = select_images(ctx, scores, portion)
    t2 = timer.now()
    seconds["select"] = t2 - t1
    tr = train_round(ctx, model, scores, selection, round_index, timer)
    seconds["patches"] = tr["patches_seconds"]
    seconds["train"] = tr["seconds"] - tr["patches_seconds"]
    t3 = timer.now()
    ev = evaluate_target(ctx, model)
    seconds["eval"] = timer.now() - t3
    entry = {
        "round": round_index,
        "portion": portion,
        "selected": int(selection.indices.numel()),
        "selected_per_class": selection.counts,
        "selected_images": selection.indices.tolist(),
        "candidates_per_class": selection.candidates,
        "thresholds": [float(v) for v in selection.thresholds],
        "patches": tr["patches"],
        "steps": tr["steps"],
        "loss": tr["loss"],
        **ev,
        "seconds": seconds,
        "kept_probability_maps": len(scores.probs),
    }
    return entry, tr["examples"]
