"""One LSE round on the built-in synthetic benchmark in 1 and in 2
processes (``torchrun --standalone --nproc_per_node 2``; gloo on a CPU,
NCCL on GPUs), with rank 0's seconds per stage (score, select, patches,
train, eval) and the selection / mIoU of each in extra_info.

Both start from the same theta_0 (``--init``): a source model made once by
a 1-process run with LSE_BENCH_PRETRAIN_ITERS source steps (default 50; the
timings of a round hardly depend on how good theta_0 is). The timed call is
the whole job (process start, data check, source-only evaluation, one
round). Run with
    pytest benchmarks/test_bench_distributed.py --benchmark-only --run-e2e
LSE_BENCH_SIZE=HxW overrides the image size (default 256x512). On a
2-core CPU two processes share the two cores: this measures the overhead of
the distributed path, not GPU scaling.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.conftest import describe

pytestmark = pytest.mark.e2e  # only with --run-e2e (benchmarks/conftest.py)

ROOT = Path(__file__).resolve().parent.parent
SIZE = os.environ.get("LSE_BENCH_SIZE", "256x512")
PRETRAIN = os.environ.get("LSE_BENCH_PRETRAIN_ITERS", "50")
COMMON = ["--rounds", "1", "--no-plots", "--no-progress", "--image-size", SIZE, "--source-size", SIZE]


def _run(args, nproc):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    launch = [sys.executable, "-m", "lse_fast.adapt"]
    if nproc > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                  "-m", "lse_fast.adapt"]
    proc = subprocess.run(launch + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(launch + args)} failed:\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="module")
def theta0(tmp_path_factory):
    """(cache dir, checkpoint) of the source model both runs start from."""
    cache = tmp_path_factory.mktemp("bench_ddp_cache")
    run_dir = tmp_path_factory.mktemp("bench_ddp") / "theta0"
    _run(COMMON + ["--cache-dir", str(cache), "--run-dir", str(run_dir), "--pretrain-iters", PRETRAIN,
                   "--portion-start", "0.1"], 1)
    return cache, run_dir / "checkpoints" / "round_0.pt"


@pytest.mark.parametrize("nproc", [1, 2])
def test_adapt_round_processes(benchmark, tmp_path, theta0, nproc):
    cache, init = theta0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runs = []
    count = [0]

    def one_job():
        count[0] += 1
        run_dir = tmp_path / f"run{count[0]}"
        _run(COMMON + ["--cache-dir", str(cache), "--run-dir", str(run_dir), "--init", str(init),
                       "--keep-checkpoints", "last"], nproc)
        runs.append(json.loads((run_dir / "metrics.json").read_text()))

    one_job()  # warm-up (page cache, DALI pipelines)
    runs.clear()
    benchmark.pedantic(one_job, rounds=2, iterations=1)
    r0 = runs[0]["rounds"][0]
    stages = {k: [r["rounds"][0]["seconds"][k] for r in runs] for k in r0["seconds"]}
    benchmark.extra_info.update(
        device=describe(device),
        cpu_count=os.cpu_count(),
        processes=nproc,
        backend=runs[0]["provenance"]["backend"],
        image_size=SIZE,
        torch=torch.__version__,
        selected=r0["selected"],
        selected_images=r0["selected_images"],
        thresholds=r0["thresholds"],
        steps=r0["steps"],
        source_only_miou=runs[0]["source_only"]["miou"],
        round_miou=r0["miou"],
        stage_seconds_min={k: round(min(v), 3) for k, v in stages.items()},
        round_seconds_min=round(min(sum(r["rounds"][0]["seconds"].values()) for r in runs), 3),
    )
