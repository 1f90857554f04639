"""``python -m lse_fast.adapt``: options -> validated config -> context ->
run directory -> Algorithm 1 -> summary.

Everything that can be wrong with the options (values, combinations, paths,
datasets, the --init checkpoint, a run directory in use, a resumed run's
damaged or changed files) is checked before the run directory is written;
such errors are :class:`ConfigError` and exit with status 2. Any other
exception ends with one line too (exit 1); ``--debug`` or
``LSE_FAST_DEBUG=1`` adds the traceback. SIGINT, SIGTERM and SIGHUP:
:mod:`lse_fast.adapt.signals`.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
import warnings

from lse_fast.adapt import distributed, faults, signals
from lse_fast.adapt.algorithm import NOT_LOADED, fmt_pct, run_lse
from lse_fast.adapt.config import PRESETS, ConfigError, build_parser, load_yaml, make_config
from lse_fast.adapt.context import log, make_context
from lse_fast.adapt.oracle import check_oracle_data
from lse_fast.adapt.runs import Run, held_locks, release_locks
from lse_fast.adapt.source import load_backbone, load_init, read_backbone
from lse_fast.adapt.tensorboard import check_available as check_tensorboard


DEBUG_ENV = "LSE_FAST_DEBUG"
_debug = {"on": False}  # --debug of the invocation in progress


def _parser():
    parser = build_parser()
    parser.add_argument("--debug", action="store_true", default=False,
                        help=f"on an unexpected error, print the Python traceback too (or set {DEBUG_ENV}=1)")
    return parser


def _given(argv) -> set:
    """The AdaptConfig fields set on the command line (or by its --preset /
    --config), i.e. not read from a resumed run's config.yaml."""
    args = _parser().parse_args(argv)
    names = {k for k in vars(args) if k not in ("preset", "config", "resume", "debug")}
    if getattr(args, "preset", None):
        names |= set(PRESETS[args.preset])
    if getattr(args, "config", None):
        names |= set(load_yaml(args.config))
    return names


def prepare(argv=None):
    """(run, context, model, initial) for `argv`, every check done first.

    A new run's directory (config.yaml, metrics.json) is written as soon as
    the options are valid, so a kill from then on leaves a directory that
    --resume continues; a bad dataset or --init checkpoint found while
    loading them removes it again (a ConfigError leaves nothing behind).
    The run directory's lock is held from before the first write (for
    --resume: before its files are read) until the run object is closed."""
    args = _parser().parse_args(argv)
    _debug["on"] = _debug["on"] or args.debug
    faults.check()
    run = None
    lock = None
    try:
        if args.resume:
            if distributed.env_is_main():  # rank 0 (or the only process) writes, so it holds the lock
                lock = Run.lock_for_resume(args.resume)
            cfg = make_config(args, base=Run.load_config(args.resume))
            Run.check_resumable(args.resume, cfg, given=_given(argv))
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
            run = distributed.open_run(args.resume, cfg, lock=lock)
    except BaseException:
        if run is not None:
            run.close()
        if lock is not None:
            lock.release()
        raise
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
    metrics dict written to ``<run_dir>/metrics.json``. The run directory's
    lock is released when it returns (or raises)."""
    held = held_locks()
    try:
        run, ctx, model, initial = prepare(argv)
        _active["run"] = run
        try:
            metrics = run_lse(run, ctx, model, initial)
        finally:
            run.close()
    finally:
        release_locks(keep=held)
    log(summary(run))
    return metrics


_active = {"run": None}  # the run of the invocation in progress (for the interruption message)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def _own_message(e: BaseException) -> bool:
    """True for this package's errors (their message names the option or
    file and what to do); False for an unexpected exception."""
    return isinstance(e, ConfigError) or str(e).startswith("lse_fast")


def _error_line(e: BaseException) -> str:
    prefix = distributed.current().prefix
    if _own_message(e):
        return f"error: {prefix}{e}"
    text = " ".join(str(e).split())[:300]
    return (f"error: {prefix}lse_fast.adapt: unexpected {type(e).__name__}" + (f": {text}" if text else "")
            + f" (a bug, or a file or input this run did not expect); re-run with --debug (or {DEBUG_ENV}=1) to "
            "see the traceback")


def _interrupted_line(signum: int) -> str:
    prefix = distributed.current().prefix
    name = signals.NAMES.get(signum, f"signal {signum}")
    run = _active["run"]
    if run is None:
        return (f"{prefix}interrupted by {name} before the run directory was written; nothing to resume "
                "(start the run again)")
    return f"{prefix}interrupted by {name}; continue with: python -m lse_fast.adapt --resume {run.path}"


def _debugging() -> bool:
    return _debug["on"] or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def cli(argv=None) -> int:
    """Command-line entry: runs :func:`main`; one clear line for a bad
    option, path or file (exit 2) or a failed run (exit 1; an unexpected
    exception's line says how to see its traceback: --debug or
    LSE_FAST_DEBUG=1). SIGINT, SIGTERM and SIGHUP stop the run (no file
    half written), print how to resume and exit with 128 + the signal
    number (130, 143, 129). In a distributed run the line names the rank
    ("error: [rank r/N] ..."), and the failing process leaves at once:
    torchrun then ends the others."""
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    _active["run"] = None
    _debug["on"] = "--debug" in (sys.argv[1:] if argv is None else list(argv))
    ok = False
    status = 1
    with signals.handling():
        try:
            try:
                main(argv)
                ok = True
                status = 0
            except BaseException as e:  # noqa: BLE001  (every way out ends with one line)
                if isinstance(e, SystemExit):
                    raise
                status = _report(e)
        except signals.Interrupted as e:  # a signal while the error above was reported
            print(_interrupted_line(e.signum), file=sys.stderr, flush=True)
            status = e.exit_status
        finally:
            warnings.showwarning = shown
            try:
                if ok:
                    distributed.barrier()  # no rank leaves while another still writes
            finally:
                distributed.shutdown()
    return status


def _report(e: BaseException) -> int:
    """Prints the one line for `e`; returns the exit status."""
    signum = signals.received()
    if signum is None and isinstance(e, KeyboardInterrupt):
        signum = signal.SIGINT  # SIGINT handled by Python's own handler (cli() outside the main thread)
    if signum is not None:  # whatever the signal made fail (e.g. a collective whose peer stopped)
        if _debugging() and not isinstance(e, KeyboardInterrupt):
            traceback.print_exc()
        print(_interrupted_line(signum), file=sys.stderr, flush=True)
        return 128 + int(signum)
    if _debugging() and not isinstance(e, ConfigError):
        traceback.print_exc()
    print(_error_line(e), file=sys.stderr, flush=True)
    if isinstance(e, Exception):
        distributed.report_error(e)
    return 2 if isinstance(e, ConfigError) else 1


__all__ = ["cli", "main", "prepare", "summary"]
