"""Fault injection for the resume and fault tests: the one place where a
run can be made to kill itself at a deterministic point.

The environment variable ``LSE_FAST_KILL_AT=STAGE:COUNT[:SIGNAL]`` makes the
driver send itself SIGNAL (KILL by default, INT, TERM or HUP) the COUNT-th
time it reaches :func:`point` ``(STAGE)`` (STAGE one of :data:`STAGES`).
Unset, :func:`point` does nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from lse_fast.adapt.config import ConfigError

ENV = "LSE_FAST_KILL_AT"
STAGES = {
    "start": "the run directory was just created (before data and model are loaded)",
    "source": "after a source-training step",
    "score": "after a batch of target images was scored",
    "select": "in the selection step, after the scores are complete",
    "train": "after a self-training step",
    "checkpoint": "in the middle of writing a checkpoint (half of its bytes in the temporary file)",
    "metrics": "in the middle of writing metrics.json",
    "round": "after a round was recorded",
}
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}
if hasattr(signal, "SIGHUP"):
    SIGNALS["HUP"] = signal.SIGHUP
_counts: dict = {}


def spec():
    """(stage, count, signal) of ``LSE_FAST_KILL_AT``, None when it is unset;
    ConfigError when it is malformed."""
    text = os.environ.get(ENV)
    if not text:
        return None
    parts = text.split(":")
    sig = parts[2].upper() if len(parts) == 3 else "KILL"
    ok = len(parts) in (2, 3) and parts[0] in STAGES and parts[1].isdigit() and int(parts[1]) >= 1
    if not ok or sig not in SIGNALS:
        raise ConfigError(
            f"lse_fast.adapt: {ENV} (a test hook) must be STAGE:COUNT[:{'|'.join(SIGNALS)}] with STAGE one of "
            f"{', '.join(STAGES)} and COUNT >= 1, got {text!r}"
        )
    return parts[0], int(parts[1]), SIGNALS[sig]


def check() -> None:
    """ConfigError for a malformed ``LSE_FAST_KILL_AT`` (checked at the start)."""
    spec()


def point(stage: str) -> None:
    """A fault-injection site: sends this process the signal of
    ``LSE_FAST_KILL_AT`` the COUNT-th time `stage` is reached."""
    s = spec()
    if s is None:
        return
    assert stage in STAGES, stage
    _counts[stage] = _counts.get(stage, 0) + 1
    if s[0] == stage and _counts[stage] == s[1]:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), s[2])
        if s[2] != signal.SIGKILL:
            time.sleep(1.0)  # the handler's exception is raised here, at the next bytecode (or after a deferred write)
