"""``python -m lse_fast.adapt``: LSE self-training rounds end to end.

The modules follow the paper's Algorithm 1: ``config`` (options),
``context`` (data, model, the ops seam, device, stage clock), ``source``
(theta_0), ``scoring``, ``patches``, ``training`` (the one training loop of
the source stage and the rounds), ``evaluation``, ``algorithm`` (the round
loop, selection included), ``runs`` (the run directory), ``cli``. Beside
the steps: ``verify`` (--verify, an op set), ``progress`` (bars on a
terminal, plain lines in a log), ``faults`` (the resume tests' kill points),
``distributed`` (data-parallel runs under torchrun), ``export``, ``plots``,
``tensorboard``.

``main(argv=None)`` runs in-process and returns the metrics dict (also in
``<run_dir>/metrics.json``); ``cli(argv=None)`` is the command-line entry
point (one-line errors; exit status 2 for bad options, 1 for a failed run).
See docs/driver.md.
"""

from lse_fast.adapt.algorithm import run_lse, run_round
from lse_fast.adapt.cli import cli, main
from lse_fast.adapt.config import PRESETS, AdaptConfig, ConfigError
from lse_fast.adapt.context import Context, build_model, make_context
from lse_fast.adapt.runs import Run

__all__ = [
    "AdaptConfig", "ConfigError", "Context", "PRESETS", "Run", "build_model", "cli", "main", "make_context",
    "run_lse", "run_round",
]
