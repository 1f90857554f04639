"""Data-parallel runs (torchrun, gloo on this CPU) of a tiny built-in run:
the selection of 2 processes equals that of 1, merged evaluation equals a
single-process evaluation, only rank 0 writes, a 2-process run resumes to
the same result, and a rank that fails ends the job with its message."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lse_fast import models
from lse_fast.adapt import distributed
from lse_fast.adapt.config import ConfigError
from lse_fast.data import from_spec
from lse_fast.data import loader as dali_loader
from lse_fast.data.dali import dali_available
from lse_fast.data.pil import loader as pil_loader
from lse_fast.evaluate import evaluate

ROOT = Path(__file__).resolve().parent.parent
ENTRY = str(ROOT / "tests" / "ddp_entry.py")
TINY = [
    "--synthetic-source", "12", "--synthetic-train", "12", "--synthetic-val", "4",
    "--image-size", "64x128", "--source-size", "64x128", "--pretrain-iters", "6", "--pretrain-batch-size", "2",
    "--rounds", "1", "--epochs", "1", "--batch-size", "4", "--source-batch-size", "2", "--score-batch-size", "4",
    "--portion-start", "0.3", "--lr", "1e-3", "--patch-scale", "0.5", "--no-progress", "--no-plots",
    "--num-threads", "1",
]
LAUNCH_TIMEOUT_S = 240  # a hang fails the test instead of blocking CI
STABLE = ("selected", "selected_images", "thresholds", "selected_per_class", "candidates_per_class", "patches",
          "steps", "loss", "miou", "per_class_iou")


# torchrun started with SIGINT, SIGTERM and SIGHUP at their defaults, whatever the parent shell ignores (the
# ranks inherit them); torchrun passes these signals on to every rank.
TORCHRUN = ("import runpy, signal, sys\n"
            "for s in ('SIGINT', 'SIGTERM', 'SIGHUP'):\n"
            "    signal.signal(getattr(signal, s), signal.SIG_DFL)\n"
            "sys.argv[0] = 'torchrun'\n"
            "runpy.run_module('torch.distributed.run', run_name='__main__', alter_sys=True)\n")


def _launch(args, tmp, *, nproc, watch=(), env_extra=None):
    """Runs the driver in `nproc` processes (torchrun --standalone; a plain
    process for 1); returns (completed process, seconds, {rank: writes})."""
    audit = Path(tmp) / f"audit-{time.monotonic_ns()}"
    audit.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", LSE_FAST_DIST_TIMEOUT="60",
               LSE_TEST_AUDIT=str(audit), LSE_TEST_WATCH=os.pathsep.join(str(w) for w in watch), **(env_extra or {}))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    if nproc == 1:
        cmd = [sys.executable, ENTRY, *args]
    else:
        cmd = [sys.executable, "-c", TORCHRUN, "--standalone", "--nproc_per_node", str(nproc), ENTRY, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    writes = {int(p.stem[4:]): json.loads(p.read_text()) for p in audit.glob("rank*.json")}
    return proc, seconds, writes


def _ok(proc):
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )


def _metrics(run_dir):
    return json.loads((Path(run_dir) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def one(work):
    """The single-process run (trains theta_0 on the source)."""
    run_dir = work / "one"
    proc, _, _ = _launch(TINY + ["--cache-dir", str(work / "cache"), "--run-dir", str(run_dir)], work, nproc=1)
    _ok(proc)
    return run_dir


@pytest.fixture(scope="module")
def two(work, one):
    """The same run in 2 processes from the same theta_0 (--init)."""
    run_dir = work / "two"
    args = TINY + ["--cache-dir", str(work / "cache"), "--run-dir", str(run_dir),
                   "--init", str(one / "checkpoints" / "round_0.pt")]
    proc, _, writes = _launch(args, work, nproc=2, watch=(run_dir, work / "cache"))
    _ok(proc)
    return run_dir, proc, writes


def test_two_processes_select_exactly_what_one_selects(one, two):
    a, b = _metrics(one)["rounds"][0], _metrics(two[0])["rounds"][0]
    assert b["selected"] > 0
    assert b["selected_images"] == a["selected_images"]
    assert b["thresholds"] == a["thresholds"]  # bitwise: gloo on the CPU
    assert b["selected_per_class"] == a["selected_per_class"]
    assert b["candidates_per_class"] == a["candidates_per_class"]
    assert b["patches"] == a["patches"] == 4 * a["selected"]
    # batch size per rank: 2 ranks make a round's epochs in half the steps
    assert b["steps"] == -(-b["patches"] // (2 * 4))
    # the trained models differ (2x the patches per step), not by much on this tiny run
    assert abs(b["miou"] - a["miou"]) <= 0.05


def test_merged_evaluation_equals_single_process_evaluation(one, two, work):
    so_a, so_b = _metrics(one)["source_only"], _metrics(two[0])["source_only"]
    assert so_b["per_class_iou"] == so_a["per_class_iou"]  # same theta_0, confusion summed over ranks
    assert so_b["miou"] == so_a["miou"]
    # the 2-process round-1 model evaluated by one process gives the merged numbers
    model = models.build("small_deeplab", num_classes=19)
    model.load_state_dict(torch.load(two[0] / "checkpoints" / "round_1.pt", weights_only=True)["model"])
    synth = next((work / "cache" / "synthetic").iterdir())
    val = from_spec(f"cityscapes:{synth / 'target'}", split="val")
    loader = dali_loader if dali_available() else pil_loader  # what the runs used (--loader dali, PIL fallback)
    res = evaluate(model, loader(val, batch_size=4, size=(64, 128), num_threads=1), num_classes=19,
                   device="cpu")
    b = _metrics(two[0])["rounds"][0]
    assert [v if v == v else None for v in res["iou"]] == b["per_class_iou"]


def test_only_rank_zero_writes_and_provenance(two, one):
    run_dir, proc, writes = two
    assert set(writes) == {0, 1}, proc.stderr[-2000:]
    assert writes[1] == [], f"rank 1 wrote {writes[1][:5]}"
    written = {Path(p).name for _, p in writes[0]}
    assert {"metrics.json", "config.yaml", "round_1.pt"} <= written
    assert any(n.startswith("metrics.json.") and n.endswith(".tmp") for n in written)  # NAME.<pid>-<random>.tmp
    prov = _metrics(run_dir)["provenance"]
    assert (prov["world_size"], prov["backend"]) == (2, "gloo")
    assert (_metrics(one)["provenance"]["world_size"], _metrics(one)["provenance"]["backend"]) == (1, None)
    entry = _metrics(run_dir)["rounds"][0]
    assert set(entry["seconds"]) == {"score", "select", "patches", "train", "eval"}
    # one log, rank 0's
    assert proc.stdout.count("[source-only]") == 1 and proc.stdout.count("[round 1/1]") == 1


def test_two_processes_resume_to_the_same_round(two, work):
    """A 2-process run killed after the source stage and resumed by 2
    processes redoes round 1 exactly as the uninterrupted run did."""
    src = two[0]
    run_dir = work / "resumed"
    shutil.copytree(src, run_dir)
    m = _metrics(run_dir)
    m["rounds"], m["finished"] = [], False
    (run_dir / "metrics.json").write_text(json.dumps(m))
    (run_dir / "checkpoints" / "round_1.pt").unlink()
    proc, _, writes = _launch(["--resume", str(run_dir)], work, nproc=2, watch=(run_dir,))
    _ok(proc)
    assert "[resume] 0 of 1 rounds finished" in proc.stdout
    assert writes[1] == []
    a, b = _metrics(src)["rounds"][0], _metrics(run_dir)["rounds"][0]
    assert {k: b[k] for k in STABLE} == {k: a[k] for k in STABLE}
    assert _metrics(run_dir)["resumed"][-1]["provenance"]["world_size"] == 2
    sa = torch.load(src / "checkpoints" / "round_1.pt", weights_only=True)["model"]
    sb = torch.load(run_dir / "checkpoints" / "round_1.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sigterm_to_torchrun_stops_every_rank_and_the_run_resumes(two, work):
    """SIGTERM to torchrun (a scheduler stopping the job) as round 1 of a
    resumed 2-process run starts: every rank prints how to resume and
    stops, round 1 is not recorded, no temporary file is left, and a
    second --resume ends with the uninterrupted run's round."""
    src = two[0]
    run_dir = work / "terminated"
    shutil.copytree(src, run_dir)
    m = _metrics(run_dir)
    m["rounds"], m["finished"] = [], False
    (run_dir / "metrics.json").write_text(json.dumps(m))
    (run_dir / "checkpoints" / "round_1.pt").unlink()
    proc, _, _ = _launch(["--resume", str(run_dir)], work, nproc=2, env_extra={"LSE_TEST_TERM_AGENT_AT_ROUND": "1"})
    assert proc.returncode != 0
    for rank in (0, 1):
        line = f"[rank {rank}/2] interrupted by SIGTERM; continue with: python -m lse_fast.adapt --resume {run_dir}"
        assert line in proc.stderr.splitlines(), proc.stderr[-3000:]
    assert "error: " not in proc.stderr
    assert _metrics(run_dir)["rounds"] == [] and not list(run_dir.rglob("*.tmp"))
    proc, _, _ = _launch(["--resume", str(run_dir)], work, nproc=2)
    _ok(proc)
    a, b = _metrics(src)["rounds"][0], _metrics(run_dir)["rounds"][0]
    assert {k: b[k] for k in STABLE} == {k: a[k] for k in STABLE}


def test_a_failing_rank_ends_the_job_with_its_message(one, work):
    """Target image 1 is scored by rank 1 only; it is not an image: rank 1
    fails while rank 0 waits for it in a collective. Both end, promptly,
    with rank 1's error (after a data-parallel source stage, which rank 0
    alone cached)."""
    synth = next((work / "cache" / "synthetic").iterdir())
    data = work / "bad_data"
    shutil.copytree(synth, data)
    bad = Path(from_spec(f"cityscapes:{data / 'target'}", split="train").image_path(1))
    bad.write_bytes(b"not an image")
    cache = work / "cache_bad"
    args = TINY + ["--source", f"gta5:{data / 'source'}", "--target", f"cityscapes:{data / 'target'}",
                   "--cache-dir", str(cache), "--run-dir", str(work / "bad_run"), "--pretrain-iters", "4"]
    proc, seconds, writes = _launch(args, work, nproc=2, watch=(cache, work / "bad_run"))
    assert proc.returncode != 0
    assert "[source] done" in proc.stdout
    assert f"error: [rank 1/2] lse_fast.data: cannot decode image file {str(bad)!r}" in proc.stderr
    assert seconds < 120, f"the job took {seconds:.0f} s to end"
    assert any(Path(p).parent.name == "source_models" for _, p in writes.get(0, []))
    assert writes.get(1) == []


# --------------------------------------------------------------------------- in-process units
def test_without_torchrun_nothing_is_distributed(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    st = distributed.init_from_env("cpu")
    assert (st.enabled, st.rank, st.world_size, st.backend, st.prefix) == (False, 0, 1, None, "")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.init_from_env("cpu").enabled


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer"),
    ({"WORLD_SIZE": "2"}, "RANK is not"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK must be in [0, WORLD_SIZE=2)"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LSE_FAST_DIST_TIMEOUT": "-1"}, "LSE_FAST_DIST_TIMEOUT must be a positive"),
])
def test_bad_launch_environment_is_named(monkeypatch, env, message):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LSE_FAST_DIST_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        distributed.init_from_env("cpu")
    assert not distributed.current().enabled


@pytest.mark.parametrize("world, selected", [(2, 5), (3, 2), (4, 1), (2, 2), (8, 3)])
def test_selected_images_are_dealt_out_to_every_rank(world, selected):
    shares = [distributed.positions_of(r, world, selected) for r in range(world)]
    assert all(shares), "every rank needs images to take part in each step"
    if selected >= world:
        assert sorted(p for s in shares for p in s) == list(range(selected))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    else:
        assert {p for s in shares for p in s} == set(range(selected))
