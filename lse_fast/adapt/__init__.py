"""``python -m lse_fast.adapt``: LSE self-training rounds end to end.

The modules follow the paper's Algorithm 1: ``config`` (options),
``context`` (data, model, ops, device), ``source`` (theta_0), ``scoring``,
``select``, ``patches``, ``training``, ``evaluation``, ``algorithm`` (the
round loop), ``runs`` (the run directory), ``verify`` (--verify), ``cli``;
``distributed`` (data-parallel runs under torchrun, README "Scale-out").

``main(argv=None)`` runs in-process and returns the metrics dict (also in
``<run_dir>/metrics.json``); ``cli(argv=None)`` is the command-line entry
point (one-line errors; exit status 2 for bad options, 1 for a failed run).
See README, "Running LSE".
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
