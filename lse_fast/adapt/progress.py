"""Progress of the long stages (source training, scoring, round training,
evaluation), one helper for all of them: a tqdm bar on stderr when stderr is
a terminal, and, when stdout is not a terminal (a log file, ``nohup``, CI, a
notebook), a plain line on stdout every 10% of the stage or every 30 s,
whichever comes first, with the rate and the time left::

    [source] 120/600 steps (20%), 2.31 steps/s, ETA 3 min 28 s, loss 1.0423

In a distributed run only rank 0 reports.
"""

from __future__ import annotations

import sys
import time

from lse_fast.adapt import distributed

INTERVAL_S = 30.0  # a line at least this often
FRACTION = 0.1  # and at every tenth of the stage


def duration(seconds: float) -> str:
    """'42 s', '4 min 05 s', '1 h 02 min'."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Wraps `iterable` (of `total` items); iterate over it as over the
    iterable. ``note(text)`` adds e.g. the last loss to the bar and to the
    next line. ``bar=False`` leaves a terminal to the caller's own display
    (the evaluator's); ``lines`` / ``bar`` None: decided by the streams."""

    def __init__(self, iterable, *, total, desc, unit="steps", enabled=True, bar=None, lines=None,
                 clock=time.monotonic, write=None, interval=INTERVAL_S, fraction=FRACTION):
        self.iterable = iterable
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        main = distributed.current().is_main
        self.bar = bool(enabled and main and (sys.stderr.isatty() if bar is None else bar))
        self.lines = bool(enabled and main and (not sys.stdout.isatty() if lines is None else lines))
        self.clock = clock
        self.write = write or (lambda line: print(line, flush=True))
        self.interval = interval
        self.fraction = fraction
        self.extra = ""
        self._tqdm = None

    def __len__(self):
        return self.total

    def note(self, text: str) -> None:
        self.extra = text
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(text)

    def __iter__(self):
        if self.bar:
            from tqdm import tqdm  # optional dependency, only for interactive runs

            self._tqdm = tqdm(self.iterable, total=self.total, desc=self.desc, leave=False, file=sys.stderr,
                              dynamic_ncols=True)
            source = self._tqdm
        else:
            source = self.iterable
        if not self.lines:
            yield from source
            return
        start = last = self.clock()
        step = max(1, int(self.total * self.fraction))
        next_count = step
        done = 0
        for item in source:
            yield item
            done += 1
            now = self.clock()
            if done >= next_count or now - last >= self.interval:
                self.write(self.line(done, now - start))
                last = now
                while next_count <= done:
                    next_count += step

    def line(self, done: int, elapsed: float) -> str:
        """The plain progress line after `done` items in `elapsed` seconds."""
        rate = done / elapsed if elapsed > 0 else float("inf")
        text = f"[{self.desc}] {done}/{self.total} {self.unit}"
        if self.total > 0:
            text += f" ({100 * done / self.total:.0f}%)"
        if elapsed > 0:
            text += f", {rate:.3g} {self.unit}/s"
            if done < self.total:
                text += f", ETA {duration((self.total - done) / rate)}"
        return text + (f", {self.extra}" if self.extra else "")


def progress(iterable, *, total, desc, unit="steps", enabled=True, bar=None):
    """:class:`Progress` of `iterable`."""
    return Progress(iterable, total=total, desc=desc, unit=unit, enabled=enabled, bar=bar)
