"""``python -m lse_fast.adapt``: LSE self-training rounds end to end.

``main(argv=None)`` runs in-process and returns the metrics dict (also in
``<run_dir>/metrics.json``); ``cli(argv=None)`` is the command-line entry
point (clear one-line errors, exit status 2 for bad arguments, 1 for a
failed run). See README, "Running LSE".
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from lse_fast.adapt.config import AdaptConfig, PRESETS, build_parser, make_config
from lse_fast.adapt.runs import Run

__all__ = ["AdaptConfig", "PRESETS", "cli", "main"]

SYNTHETIC_DATA_SEED = 0  # the benchmark's content does not depend on the run seed



def build_model(cfg):
    """The configured model; a factory that takes ``freeze_bn`` (DeepLab-v2)
    gets the run's choice, so --no-freeze-bn reaches its BatchNorm layers."""
    import inspect

    from lse_fast import models

    factory = models._resolve(cfg.model)
    try:
        takes_freeze_bn = "freeze_bn" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_freeze_bn = False
    kwargs = {"freeze_bn": cfg.freeze_bn} if takes_freeze_bn else {}
    return models.build(cfg.model, num_classes=cfg.num_classes, **kwargs)

def _log(msg):
    print(msg, flush=True)


class Context:
    """What every stage needs: config, ops, device, datasets, loaders."""

    def __init__(self, cfg: AdaptConfig, model, datasets, verifier):
        from lse_fast.adapt.rounds import Ops, View

        self.cfg = cfg
        self.ops = Ops(cfg.ops)
        self.device = resolve_device(cfg.device)
        self.verifier = verifier
        self.source, self.target_base, self.val = datasets
        self.target_view = View(self.target_base)
        self.normalization = getattr(model, "input_normalization", "imagenet")
        self.classes = class_set(self.source, self.target_base, self.val, cfg.num_classes)
        self.class_names = class_names(self.target_base, cfg.num_classes)
        self.val_loader = self.loader(self.val, batch_size=cfg.score_batch_size, size=tuple(cfg.image_size))

    def loader(self, dataset, *, batch_size, size, shuffle=False, seed=0, train=False):
        from lse_fast.data import loader

        dev = "cuda" if self.device.type == "cuda" else "cpu"
        if self.device.type == "cuda" and self.device.index is not None:
            dev = f"cuda:{self.device.index}"
        return loader(dataset, batch_size=batch_size, size=tuple(size), shuffle=shuffle, seed=seed, train=train,
                      device=dev, num_threads=self.cfg.num_threads, normalization=self.normalization)


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"lse_fast.adapt: `device` is {spec!r} but torch sees no CUDA device")
    return dev


def class_set(source, target, val, num_classes):
    """Classes taking part in selection and mIoU: those both domains have
    (16 for SYNTHIA -> Cityscapes, 19 for GTA5 -> Cityscapes)."""
    classes = set(range(num_classes))
    for ds in (source, target, val):
        have = getattr(ds, "classes", None)
        if have is not None:
            classes &= {int(c) for c in have}
    if not classes:
        raise ValueError("lse_fast.adapt: the source and target datasets share no class")
    return sorted(classes)


def class_names(dataset, num_classes):
    names = getattr(dataset, "class_names", None)
    if names is not None and len(names) == num_classes:
        return list(names)
    return [f"class_{i}" for i in range(num_classes)]


def _dataset(spec, split, what):
    from lse_fast.data import from_spec

    kind, _, path = spec.partition(":")
    if not path:
        raise ValueError(f"lse_fast.adapt: `{what}` must be KIND:PATH, got {spec!r}")
    if not Path(path).exists():
        raise ValueError(f"lse_fast.adapt: `{what}` path {path!r} does not exist")
    try:
        return from_spec(spec, split=split)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise ValueError(f"lse_fast.adapt: `{what}` {spec!r}: {e}") from None


def synthetic_dir(cfg: AdaptConfig) -> Path:
    h, w = cfg.image_size
    return cfg.cache_path() / "synthetic" / (
        f"{h}x{w}-s{cfg.synthetic_source}-t{cfg.synthetic_train}-v{cfg.synthetic_val}-seed{SYNTHETIC_DATA_SEED}"
    )


def load_datasets(cfg: AdaptConfig):
    """(source, target train, target val) datasets; generates or reuses the
    synthetic benchmark."""
    if cfg.source == "synthetic":
        from lse_fast.data import synthetic

        out = synthetic_dir(cfg)
        t0 = time.perf_counter()
        synthetic.ensure(out, num_source=cfg.synthetic_source, num_target_train=cfg.synthetic_train,
                         num_target_val=cfg.synthetic_val, size=tuple(cfg.image_size), seed=SYNTHETIC_DATA_SEED)
        _log(f"[data] synthetic benchmark at {out} ({time.perf_counter() - t0:.1f} s)")
        source = _dataset(f"gta5:{out / 'source'}", "train", "source")
        target = _dataset(f"cityscapes:{out / 'target'}", "train", "target")
        val = _dataset(f"cityscapes:{out / 'target'}", "val", "target")
    else:
        source = _dataset(cfg.source, "train", "source")
        target = _dataset(cfg.target, "train", "target")
        val = _dataset(cfg.target, "val", "target")
    for ds, what in ((source, "source"), (target, "target train split"), (val, "target val split")):
        if len(ds) == 0:
            raise ValueError(f"lse_fast.adapt: the {what} ({ds!r}) has no images")
    if not source.has_labels:
        raise ValueError(f"lse_fast.adapt: the source ({source!r}) has no labels")
    if not val.has_labels:
        raise ValueError(f"lse_fast.adapt: the target val split ({val!r}) has no labels to evaluate on")
    return source, target, val


def source_model_key(cfg: AdaptConfig, source) -> str:
    import lse_fast

    desc = {
        "model": cfg.model, "num_classes": cfg.num_classes, "source": cfg.source,
        "source_root": str(getattr(source, "root", "")), "source_images": len(source),
        "source_size": list(cfg.source_size), "iters": cfg.pretrain_iters, "lr": cfg.pretrain_lr,
        "batch": cfg.pretrain_batch_size, "seed": cfg.seed, "lse_fast": lse_fast.__version__,
        "color_aug": cfg.pretrain_color_aug,
    }
    if cfg.source == "synthetic":
        desc["synthetic"] = synthetic_dir(cfg).name
    return hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def color_augment(x, generator):
    """Random photometric change of normalised images [B, 3, H, W]: per image
    a desaturation towards the channel mean (weight 0..0.6), per-channel gains
    (0.6..1.4) and offsets (-0.6..0.6, in normalised units)."""
    b = x.shape[0]
    sat = torch.rand(b, 1, 1, 1, generator=generator) * 0.6
    gain = 0.6 + 0.8 * torch.rand(b, 3, 1, 1, generator=generator)
    shift = 1.2 * torch.rand(b, 3, 1, 1, generator=generator) - 0.6
    sat, gain, shift = sat.to(x.device), gain.to(x.device), shift.to(x.device)
    gray = x.mean(1, keepdim=True)
    return (x * (1 - sat) + gray * sat) * gain + shift


def pretrain_source(ctx: Context, model) -> str:
    """Trains the model on the source domain (cached under cache_dir, keyed
    by everything that determines it) and returns the checkpoint path."""
    from lse_fast.adapt.rounds import _infinite, progress_bar, seed_for

    cfg = ctx.cfg
    path = cfg.cache_path() / "source_models" / f"{cfg.model.replace(':', '_').replace('/', '_')}-{source_model_key(cfg, ctx.source)}.pt"
    if path.is_file():
        _log(f"[source] reusing the source-trained model {path}")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        return str(path)
    if cfg.pretrain_iters == 0:
        _log("[source] pretrain_iters = 0: starting from the untrained model")
        return None
    _log(f"[source] training {cfg.model} on the source domain for {cfg.pretrain_iters} steps")
    t0 = time.perf_counter()
    torch.manual_seed(seed_for(cfg.seed, 0, 10))
    loader = ctx.loader(ctx.source, batch_size=min(cfg.pretrain_batch_size, len(ctx.source)),
                        size=tuple(cfg.source_size), shuffle=True, seed=seed_for(cfg.seed, 0, 11), train=True)
    it = _infinite(loader)
    aug_gen = torch.Generator().manual_seed(seed_for(cfg.seed, 0, 12))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.pretrain_lr)
    n = cfg.pretrain_iters
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - min(s, n - 1) / n) ** 0.9)
    model.train()
    ops = ctx.ops
    bar = progress_bar(range(n), total=n, desc="source", enabled=cfg.progress)
    last = float("nan")
    for _ in bar:
        b = next(it)
        x, y = b["image"].to(ctx.device), b["label"].to(ctx.device)
        if cfg.pretrain_color_aug:
            x = color_augment(x, aug_gen)
        out = model(x)
        out = torch.nn.functional.interpolate(out.float(), size=tuple(y.shape[-2:]), mode="bilinear",
                                              align_corners=False)
        loss = ops.focal_ce_loss(out, y, gamma=0.0, beta=0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        last = float(loss.detach())
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{last:.4f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "config": cfg.to_dict()}, tmp)
    os.replace(tmp, path)
    _log(f"[source] done in {time.perf_counter() - t0:.1f} s (last loss {last:.4f}); cached at {path}")
    return str(path)


def _fmt_pct(v):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def summary_line(entry, total_rounds, num_images, baseline, classes):
    th = [entry["thresholds"][c] for c in classes]
    th = [t for t in th if t is not None and not math.isnan(t)]
    s = entry["seconds"]
    gain = ""
    if baseline is not None and not math.isnan(baseline):
        gain = f" ({100 * (entry['miou'] - baseline):+.1f} vs source-only)"
    return (
        f"[round {entry['round']}/{total_rounds}] p={entry['portion']:.2f} selected {entry['selected']}/{num_images} "
        f"thresholds {len(th)} classes, mean {sum(th) / max(len(th), 1):.3f} (min {min(th, default=float('nan')):.3f}, "
        f"max {max(th, default=float('nan')):.3f}) loss {entry['loss']:.4f} mIoU {_fmt_pct(entry['miou'])}{gain} | "
        f"seconds: score {s['score']:.1f} select {s['select']:.2f} patches {s['patches']:.1f} "
        f"train {s['train']:.1f} eval {s['eval']:.1f}"
    )


def main(argv=None) -> dict:
    """Runs LSE as configured by ``argv`` (command-line options); returns the
    metrics dict written to ``<run_dir>/metrics.json``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        base = Run.load_config(args.resume)
        cfg = make_config(args, base=base)
        run = Run.resume(args.resume, cfg)
    else:
        cfg = make_config(args)
        run = Run.create(cfg)
    return run_lse(run)


def run_lse(run: Run) -> dict:
    from lse_fast import models
    from lse_fast.adapt import plots
    from lse_fast.adapt.rounds import Verifier, run_round, seed_for

    cfg = run.config
    t_all = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    _log(f"[run] {run.path}  device {device}  ops {cfg.ops}{'  verify' if cfg.verify else ''}")
    datasets = load_datasets(cfg)
    torch.manual_seed(seed_for(cfg.seed, 0, 0))
    model = build_model(cfg)
    verifier = Verifier() if cfg.verify else None
    if cfg.verify and cfg.ops != "fused":
        raise ValueError("lse_fast.adapt: --verify compares the fused ops with the reference; use it with --ops fused")
    ctx = Context(cfg, model, datasets, verifier)
    model.to(ctx.device)
    portions = cfg.portions()
    done = run.finished_rounds()
    if run.metrics.get("source_only") is not None and run.checkpoint_path(done) is not None:
        run.load_round(model, done)
        model.to(ctx.device)
        _log(f"[resume] {done} of {len(portions)} rounds finished; continuing with round {done + 1}")
    else:
        if done > 0:
            raise ValueError(f"lse_fast.adapt: --resume {str(run.path)!r}: metrics.json lists {done} rounds "
                             "but no source-only result; the run directory is inconsistent")
        if cfg.init:
            if not Path(cfg.init).is_file():
                raise ValueError(f"lse_fast.adapt: `init` checkpoint {cfg.init!r} does not exist")
            missing, _unexpected = models.load_checkpoint(model, cfg.init)
            if missing:
                # A source-trained checkpoint must fill the whole model: a head
                # left random would make every number of the run meaningless.
                shown = ", ".join(list(missing)[:8]) + (" ..." if len(missing) > 8 else "")
                raise ValueError(
                    f"lse_fast.adapt: `init` checkpoint {cfg.init!r} leaves {len(missing)} model tensors "
                    f"unset (missing or of another shape, e.g. a head for another number of classes): {shown}"
                )
            init = cfg.init
        else:
            init = pretrain_source(ctx, model)
        model.to(ctx.device)
        run.metrics["init"] = init
        run.metrics["classes"] = ctx.classes
        run.metrics["class_names"] = ctx.class_names
        run.metrics["num_target_train"] = len(ctx.target_view)
        t0 = time.perf_counter()
        from lse_fast.adapt.rounds import evaluate_target

        so = evaluate_target(ctx, model)
        so["seconds"] = time.perf_counter() - t0
        run.metrics["source_only"] = so
        run.save_checkpoint(0, model)
        run.save_metrics()
        _log(f"[source-only] mIoU {_fmt_pct(so['miou'])} over {len(ctx.classes)} classes on {len(ctx.val)} val images")
    baseline = run.metrics["source_only"]["miou"]
    for r in range(done + 1, len(portions) + 1):
        p = portions[r - 1]
        torch.manual_seed(seed_for(cfg.seed, r, 0))
        entry, examples = run_round(ctx, model, r, p)
        if verifier is not None:
            entry["verify"] = verifier.report()
            run.metrics["verify"] = verifier.report()
        run.save_round(entry, model)
        _log(summary_line(entry, len(portions), len(ctx.target_view), baseline, ctx.classes))
        if cfg.plots:
            plots.pseudo_label_examples(run.path / "plots" / f"pseudo_labels_round{r}.png", examples,
                                        ctx.normalization, title=f"round {r}: patches and pseudo-labels")
            plots.all_plots(run.path / "plots", run.metrics)
    run.metrics["finished"] = True
    run.metrics["total_seconds_this_invocation"] = time.perf_counter() - t_all
    run.save_metrics()
    if cfg.plots:
        plots.all_plots(run.path / "plots", run.metrics)
    last = run.metrics["rounds"][-1]["miou"] if run.metrics["rounds"] else float("nan")
    _log(f"[done] source-only mIoU {_fmt_pct(baseline)} -> after {len(run.metrics['rounds'])} rounds "
         f"{_fmt_pct(last)}; run directory {run.path}")
    if verifier is not None:
        _log(f"[verify] {verifier.checks} checks, largest deviations: {json.dumps(verifier.max)}")
    return run.metrics


def cli(argv=None) -> int:
    """Command-line entry: runs :func:`main`, prints one clear line for a
    bad argument or path (exit 2) or a failed run (exit 1)."""
    try:
        main(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130
    return 0
