"""One LSE round on the built-in synthetic benchmark, `--ops fused` against
`--ops reference`, with the seconds of every stage (score, select, patches,
train, eval) in the benchmark's extra_info.

Uses the default synthetic configuration (data and the source-trained model
come from the cache, $LSE_FAST_HOME or ~/.cache/lse_fast, and are made on
the first run). Run with
    pytest benchmarks/test_bench_adapt.py --benchmark-only --run-e2e
Override the image size with LSE_BENCH_SIZE=HxW (data and source model
are then made for that size).
"""

import os

import pytest
import torch

from benchmarks.conftest import describe
from lse_fast.adapt import main

pytestmark = pytest.mark.e2e  # only with --run-e2e (benchmarks/conftest.py)

SIZE = os.environ.get("LSE_BENCH_SIZE", "256x512")


@pytest.mark.parametrize("provider", ["fused", "reference"])
def test_adapt_round(benchmark, tmp_path, provider):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runs = []
    count = [0]

    def one_round():
        count[0] += 1
        run_dir = tmp_path / f"run{count[0]}"
        runs.append(main(["--rounds", "1", "--ops", provider, "--no-plots", "--no-progress",
                          "--image-size", SIZE, "--source-size", SIZE, "--run-dir", str(run_dir),
                          "--keep-checkpoints", "last"]))

    one_round()  # warm-up: makes data and source model if missing, builds the pipelines
    runs.clear()
    benchmark.pedantic(one_round, rounds=2, iterations=1)
    stages = {k: [r["rounds"][0]["seconds"][k] for r in runs] for k in runs[0]["rounds"][0]["seconds"]}
    benchmark.extra_info.update(
        device=describe(device),
        provider=provider,
        image_size=SIZE,
        torch=torch.__version__,
        selected=runs[0]["rounds"][0]["selected"],
        patches=runs[0]["rounds"][0]["patches"],
        stage_seconds_min={k: round(min(v), 3) for k, v in stages.items()},
        round_seconds_min=round(min(sum(r["rounds"][0]["seconds"].values()) for r in runs), 3),
    )
