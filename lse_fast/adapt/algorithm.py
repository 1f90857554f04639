"""Algorithm 1 of the paper: from the source model theta_0, for each portion
p of the schedule, score the target set, select images per class with
dynamic thresholds (:func:`lse_fast.selection.select`), make patches and
pseudo-labels, train, evaluate, and record the round (checkpoint first,
then metrics.json). Each step is timed by the context's stage clock.
"""

from __future__ import annotations

import json
import math
import time

import torch

from lse_fast import selection as sel
from lse_fast.adapt import distributed, faults, plots, training
from lse_fast.adapt.context import Context, log, seed_for
from lse_fast.adapt.evaluation import evaluate_target
from lse_fast.adapt.export import export_predictions, export_pseudo_labels
from lse_fast.adapt.oracle import train_oracle
from lse_fast.adapt.runs import Run
from lse_fast.adapt.scoring import score_target
from lse_fast.adapt.source import initial_model
from lse_fast.adapt.tensorboard import TensorBoardLog

NOT_LOADED = object()  # run_lse(initial=...) when theta_0 still has to be made


def fmt_pct(v):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def summary_line(entry, total_rounds, num_images, baseline, classes):
    """The one log line of a finished round."""
    th = [entry["thresholds"][c] for c in classes]
    th = [t for t in th if t is not None and not math.isnan(t)]
    s = entry["seconds"]
    gain = ""
    if baseline is not None and not math.isnan(baseline):
        gain = f" ({100 * (entry['miou'] - baseline):+.1f} vs source-only)"
    return (
        f"[round {entry['round']}/{total_rounds}] p={entry['portion']:.2f} selected {entry['selected']}/{num_images} "
        f"thresholds {len(th)} classes, mean {sum(th) / max(len(th), 1):.3f} (min {min(th, default=float('nan')):.3f}, "
        f"max {max(th, default=float('nan')):.3f}) loss {entry['loss']:.4f} mIoU {fmt_pct(entry['miou'])}{gain} | "
        f"seconds: score {s['score']:.1f} select {s['select']:.2f} patches {s['patches']:.1f} "
        f"train {s['train']:.1f} eval {s['eval']:.1f}"
    )


def run_round(ctx: Context, model, round_index: int, portion: float, export_dir=None):
    """One round; returns its metrics entry and pseudo-label examples. With
    `export_dir`, the round's pseudo-labels are written there as PNGs."""
    cfg, clock = ctx.cfg, ctx.clock
    clock.reset("score", "select", "patches", "train", "eval")
    with clock("score"):
        scores = score_target(ctx, model, portion)
    with clock("select"):  # paper Sections 3.3-3.4: class-based sorting, dynamic thresholds h_c
        faults.point("select")
        selection = sel.select(scores.class_pixels, scores.class_confidence, scores.class_entropy, portion,
                               classes=ctx.classes, threshold_image=cfg.threshold_image, rounding=cfg.share_rounding)
    if export_dir is not None:
        with clock("export"):
            export_pseudo_labels(ctx, model, scores, selection, selection.filter_thresholds(), export_dir)
    with clock("train"):  # the patches made while training are counted under "patches"
        tr = training.train_round(ctx, model, scores, selection, round_index)
    with clock("eval"):
        ev = evaluate_target(ctx, model)
    entry = {
        "round": round_index,
        "portion": portion,
        "selected": int(selection.indices.numel()),
        "selected_per_class": selection.counts,
        "selected_images": selection.indices.tolist(),
        "candidates_per_class": selection.candidates,
        "thresholds": [float(v) for v in selection.thresholds],
        "patches": tr.patches,
        "steps": tr.steps,
        "loss": tr.loss,
        **ev,
        "seconds": dict(clock.seconds),
        "kept_probability_maps": len(scores.probs) if scores.probs is not None else 0,
        "probability_maps": "kept" if scores.probs is not None else "recomputed",
        "peak_probability_map_bytes": scores.peak_map_bytes,
    }
    return entry, tr.examples


def record_skipped(run: Run, ctx: Context) -> dict:
    """metrics.json 'skipped_files' (--skip-bad-files): the files skipped by
    this invocation and by earlier ones of a resumed run."""
    skipped = dict(run.metrics.get("skipped_files") or {})
    skipped.update(ctx.bad_files)
    if skipped:
        run.metrics["skipped_files"] = dict(sorted(skipped.items()))
    return run.metrics.get("skipped_files", {})


def source_only(run: Run, ctx: Context, model, initial) -> None:
    """theta_0 made (or taken as loaded), evaluated and saved as round 0."""
    init = initial_model(ctx, model) if initial is NOT_LOADED else initial
    model.to(ctx.device)
    distributed.sync_model(ctx, model)  # theta_0 identical on every rank
    run.metrics["init"] = init
    run.metrics["input_normalization"] = ctx.normalization
    run.metrics["classes"] = ctx.classes
    run.metrics["class_names"] = ctx.class_names
    run.metrics["num_target_train"] = len(ctx.target_view)
    ctx.clock.reset()
    with ctx.clock("eval"):
        so = evaluate_target(ctx, model)
    so["seconds"] = ctx.clock.seconds["eval"]
    run.metrics["source_only"] = so
    run.save_checkpoint(0, model)
    run.save_metrics()
    log(f"[source-only] mIoU {fmt_pct(so['miou'])} over {len(ctx.classes)} classes on {len(ctx.val)} val images")


def run_lse(run: Run, ctx: Context, model, initial=NOT_LOADED) -> dict:
    """Runs (or continues) every round of `run`; returns its metrics."""
    cfg = run.config
    t_all = time.perf_counter()
    log(f"[run] {run.path}  device {ctx.device}  ops {cfg.ops}  loader {ctx.loader_kind} on {ctx.loader_device}"
        f"{'  verify' if cfg.verify else ''}")
    portions = cfg.portions()
    done = run.finished_rounds()
    if run.metrics.get("source_only") is not None and run.checkpoint_path(done) is not None:
        run.load_round(model, done)
        model.to(ctx.device)
        distributed.sync_model(ctx, model)
        log(f"[resume] {done} of {len(portions)} rounds finished; continuing with round {done + 1}")
    else:
        source_only(run, ctx, model, initial)
    is_main = distributed.current().is_main  # rank 0 writes every file (exports, TensorBoard, plots)
    board = TensorBoardLog(run.path / "tensorboard") if cfg.tensorboard and is_main else None
    if board is not None and done == 0:
        board.source_only(run.metrics["source_only"])
    baseline = run.metrics["source_only"]["miou"]
    for r in range(done + 1, len(portions) + 1):
        torch.manual_seed(seed_for(cfg.seed, r, 0))
        export_dir = run.path / "export" / f"round_{r}" / "pseudo_labels" if cfg.export and is_main else None
        try:
            entry, examples = run_round(ctx, model, r, portions[r - 1], export_dir)
        except training.NonFiniteLoss as e:
            last = run.checkpoint_path(r - 1)
            msg = f"{e}; the run directory keeps round {r - 1} (checkpoint {last})"
            run.metrics["stopped"] = {"round": r, "reason": msg}
            run.save_metrics()
            raise training.NonFiniteLoss(msg) from None
        checks = ctx.ops.report()  # --verify: the deviations of the fused ops so far
        if checks is not None:
            entry["verify"] = run.metrics["verify"] = checks
        record_skipped(run, ctx)
        run.save_round(entry, model)
        log(summary_line(entry, len(portions), len(ctx.target_view), baseline, ctx.classes))
        if board is not None:
            board.round(entry, examples, ctx.classes, ctx.normalization, cfg.num_classes)
        if cfg.plots and is_main:
            plots.pseudo_label_examples(run.path / "plots" / f"pseudo_labels_round{r}.png", examples,
                                        ctx.normalization, title=f"round {r}: patches and pseudo-labels")
            plots.all_plots(run.path / "plots", run.metrics)
    if cfg.export and is_main:
        n = export_predictions(ctx, model, run.path / "export" / "predictions")
        log(f"[export] predictions of {n} val images in {run.path / 'export' / 'predictions'}")
    if cfg.oracle and run.metrics.get("oracle") is None:
        train_oracle(run, ctx, model)
    if board is not None:
        board.close()
    run.metrics.pop("stopped", None)
    skipped = record_skipped(run, ctx)
    if skipped:
        log(f"[data] skipped {len(skipped)} unreadable file(s) (--skip-bad-files): " + ", ".join(skipped))
    run.metrics["finished"] = True
    run.metrics["total_seconds_this_invocation"] = time.perf_counter() - t_all
    run.save_metrics()
    if cfg.plots and distributed.current().is_main:
        plots.all_plots(run.path / "plots", run.metrics)
    checks = ctx.ops.report()
    if checks is not None:
        log(f"[verify] {checks['checks']} checks, largest deviations: {json.dumps(checks['max_deviation'])}")
    return run.metrics
