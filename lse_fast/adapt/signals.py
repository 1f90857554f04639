"""Termination signals of the driver: SIGINT (Ctrl-C), SIGTERM (``kill``,
``docker stop``, Slurm preemption, torchrun's shutdown) and SIGHUP (the
terminal went away) all end a run the same way.

While :func:`handling` is active (``python -m lse_fast.adapt`` installs it
for the whole run), the first such signal raises :class:`Interrupted` in
the main thread at the next Python instruction, so the run stops at once;
inside a :func:`deferred` block (every atomic file write and the recording
of a round) the signal is only noted and raised when the block ends, so no
file is ever left half written by a signal. The command line then prints
one line saying how to resume and exits with 128 + the signal number (130,
143, 129). A signal that the parent process set to be ignored (``nohup``
ignores SIGHUP, a background job of a shell ignores SIGINT) stays ignored.
A second signal while the first is being handled is only noted.
"""

from __future__ import annotations

import contextlib
import signal
import threading

NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
if hasattr(signal, "SIGHUP"):
    NAMES[signal.SIGHUP] = "SIGHUP"


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by a termination signal (a KeyboardInterrupt,
    so code that catches Exception does not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {NAMES.get(signum, signum)}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + int(self.signum)


_received: list = []  # signal numbers received while handling (first one first)
_raised = False
_depth = 0  # nesting of deferred() blocks


def received():
    """The first termination signal received while :func:`handling`, or None."""
    return _received[0] if _received else None


def _handler(signum, frame):
    global _raised
    _received.append(signum)
    if _depth > 0 or _raised:
        return  # raised when the deferred block ends / already stopping
    _raised = True
    raise Interrupted(signum)


@contextlib.contextmanager
def handling():
    """Installs the handler for SIGINT, SIGTERM and SIGHUP (those not set to
    be ignored) for the duration of the block; restores the previous ones.
    Does nothing outside the main thread (signals go to the main thread)."""
    global _raised, _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    _raised = False
    _depth = 0
    previous = {}
    try:
        for signum in NAMES:
            old = signal.getsignal(signum)
            if old == signal.SIG_IGN:
                continue
            previous[signum] = old
            signal.signal(signum, _handler)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def deferred():
    """A block a termination signal does not interrupt: the signal is noted
    and :class:`Interrupted` is raised when the block ends (unless it ends
    with another exception, which then propagates)."""
    global _depth, _raised
    _depth += 1
    ok = False
    try:
        yield
        ok = True
    finally:
        _depth -= 1
        if ok and _depth == 0 and _received and not _raised:
            _raised = True
            raise Interrupted(_received[0])


__all__ = ["Interrupted", "NAMES", "deferred", "handling", "received"]
