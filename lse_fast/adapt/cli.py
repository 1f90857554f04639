"""``python -m lse_fast.adapt``: options -> validated config -> context ->
run directory -> Algorithm 1 -> summary.

Everything that can be wrong with the options (values, combinations, paths,
datasets, the --init checkpoint) is checked before the run directory is
written; such errors are :class:`ConfigError` and exit with status 2.
"""

from __future__ import annotations

import sys
import warnings

from lse_fast.adapt import distributed
from lse_fast.adapt.algorithm import NOT_LOADED, fmt_pct, run_lse
from lse_fast.adapt.config import ConfigError, build_parser, make_config
from lse_fast.adapt.context import log, make_context
from lse_fast.adapt.oracle import check_oracle_data
from lse_fast.adapt.runs import Run, check_kill_hook
from lse_fast.adapt.source import load_backbone, load_init, read_backbone
from lse_fast.adapt.tensorboard import check_available as check_tensorboard


def prepare(argv=None):
    """(run, context, model, initial) for `argv`, every check done first.

    A new run's directory (config.yaml, metrics.json) is written as soon as
    the options are valid, so a kill from then on leaves a directory that
    --resume continues; a bad dataset or --init checkpoint found while
    loading them removes it again (a ConfigError leaves nothing behind)."""
    args = build_parser().parse_args(argv)
    check_kill_hook()
    run = None
    if args.resume:
        cfg = make_config(args, base=Run.load_config(args.resume))
        Run.check_resumable(args.resume)
    else:
        cfg = make_config(args)
    cfg.check_runnable()
    if cfg.tensorboard:
        check_tensorboard()
    distributed.init_from_env(cfg.device)  # a no-op unless started by torchrun with WORLD_SIZE > 1
    if not args.resume:
        run = distributed.open_run(None, cfg)  # rank 0 writes; other ranks follow
    try:
        backbone, normalization = read_backbone(cfg) if cfg.backbone and not cfg.init else (None, None)
        ctx, model = make_context(cfg, normalization)
        if cfg.oracle:
            check_oracle_data(ctx)
        if backbone is not None:
            load_backbone(cfg, model, backbone)
            model.to(ctx.device)
        initial = NOT_LOADED
        if cfg.init and not args.resume:
            initial = load_init(cfg, model)
            model.to(ctx.device)
    except ConfigError:
        if run is not None:
            run.discard()
        raise
    if args.resume:
        run = distributed.open_run(args.resume, cfg)
    return run, ctx, model, initial


def summary(run: Run) -> str:
    """The end of the log: run directory, its files and the mIoU table."""
    m = run.metrics
    rows = [("source-only", m.get("source_only") or {})] + [(f"round {r['round']}", r) for r in m.get("rounds", [])]
    lines = [f"[done] run directory {run.path}",
             "  config.yaml, metrics.json, checkpoints/round_<r>.pt" + (", plots/*.png" if run.config.plots else "")
             + (", export/ (PNG labels)" if run.config.export else "")
             + (", tensorboard/" if run.config.tensorboard else ""),
             f"  {'':12s} {'mIoU':>7s} {'mIoU19':>7s} {'mIoU16':>7s} {'mIoU13':>7s}"]
    for name, e in rows:
        cells = " ".join(f"{fmt_pct(e.get(k)):>7s}" for k in ("miou", "miou19", "miou16", "miou13"))
        lines.append(f"  {name:12s} {cells}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Runs LSE as configured by ``argv`` (command-line options); returns the
    metrics dict written to ``<run_dir>/metrics.json``."""
    run, ctx, model, initial = prepare(argv)
    metrics = run_lse(run, ctx, model, initial)
    log(summary(run))
    return metrics


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def cli(argv=None) -> int:
    """Command-line entry: runs :func:`main`; one clear line for a bad
    option, path or file (exit 2) or a failed run (exit 1). In a
    distributed run the line names the rank ("error: [rank r/N] ..."), and
    the failing process leaves at once: torchrun then ends the others."""
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    ok = False
    try:
        main(argv)
        ok = True
    except ConfigError as e:
        print(f"error: {distributed.current().prefix}{e}", file=sys.stderr, flush=True)
        distributed.report_error(e)
        return 2
    except (RuntimeError, ValueError, OSError) as e:
        print(f"error: {distributed.current().prefix}{e}", file=sys.stderr, flush=True)
        distributed.report_error(e)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
        if ok:
            distributed.barrier()  # no rank leaves while another still writes
        distributed.shutdown()
    return 0


__all__ = ["cli", "main", "prepare", "summary"]
