"""``python tests/ddp_entry.py ARGS`` (or under torchrun): runs
``lse_fast.adapt.cli(ARGS)`` with a Python audit hook that records every
file this process creates, opens for writing, renames or removes under the
directories in LSE_TEST_WATCH (os.pathsep-separated); the list goes to
``$LSE_TEST_AUDIT/rank<RANK>.json`` at exit. Used by tests/test_distributed.py
to check that only rank 0 writes the run directory and the cache. With
LSE_TEST_TERM_AGENT_AT_ROUND=R, rank 0 sends SIGTERM to the torchrun agent
as round R starts."""

import atexit
import json
import os
import sys

WATCH = [os.path.realpath(p) for p in os.environ.get("LSE_TEST_WATCH", "").split(os.pathsep) if p]
OUT = os.environ.get("LSE_TEST_AUDIT")
WRITES = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _watched(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False
    p = os.path.realpath(os.fsdecode(path))
    return any(p == w or p.startswith(w + os.sep) for w in WATCH)


def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & WRITE_FLAGS)
        if writing and _watched(path):
            WRITES.append([event, os.fsdecode(path)])
    elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.unlink"):
        if _watched(args[0]) or (event == "os.rename" and _watched(args[1])):
            WRITES.append([event, os.fsdecode(args[1] if event == "os.rename" else args[0])])


def _dump():
    if OUT:
        with open(os.path.join(OUT, f"rank{os.environ.get('RANK', '0')}.json"), "w") as f:
            json.dump(WRITES, f)


def _term_agent_at(round_index):
    """Rank 0 sends SIGTERM to its parent, the torchrun agent (which passes
    it on to every rank), as round `round_index` starts: a scheduler
    stopping the whole job."""
    import signal

    from lse_fast.adapt import algorithm

    real = algorithm.run_round

    def run_round(ctx, model, r, *args, **kwargs):
        if r == round_index:
            os.kill(os.getppid(), signal.SIGTERM)
        return real(ctx, model, r, *args, **kwargs)

    algorithm.run_round = run_round


if __name__ == "__main__":
    sys.addaudithook(_hook)
    atexit.register(_dump)
    if os.environ.get("LSE_TEST_TERM_AGENT_AT_ROUND") and os.environ.get("RANK", "0") == "0":
        _term_agent_at(int(os.environ["LSE_TEST_TERM_AGENT_AT_ROUND"]))
    from lse_fast.adapt import cli

    sys.exit(cli(sys.argv[1:]))
