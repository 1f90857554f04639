"""Resume from any kill point: the driver is killed (SIGKILL, or SIGINT,
SIGTERM, SIGHUP) in a subprocess at a deterministic point (the LSE_FAST_KILL_AT test
hook), resumed with --resume, and must end with the same metrics.json as an
uninterrupted run (timings and provenance aside). Also: no half-written
artefact is ever read, a NaN loss stops the round and keeps the last good
checkpoint, and a run killed in its first seconds can be resumed."""

import fnmatch
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lse_fast.adapt import cli, faults, main
from lse_fast.adapt import runs as runs_mod
from lse_fast.adapt import training as training_mod
from lse_fast.adapt.config import AdaptConfig, ConfigError

ROOT = Path(__file__).resolve().parents[1]

# 8 target images of 32x64, batch 4: 2 scoring batches and 2 training steps per round, 2 rounds.
TINY = [
    "--synthetic-source", "8", "--synthetic-train", "8", "--synthetic-val", "4",
    "--image-size", "32x64", "--source-size", "32x64", "--pretrain-iters", "4", "--pretrain-batch-size", "4",
    "--rounds", "2", "--epochs", "1", "--batch-size", "4", "--source-batch-size", "2", "--score-batch-size", "4",
    "--portion-start", "0.3", "--portion-step", "0.2", "--lr", "1e-3", "--no-progress", "--no-plots",
    "--loader", "pil", "--device", "cpu",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("lse_cache_resume"))


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "uninterrupted"
    main(TINY + ["--cache-dir", cache, "--run-dir", str(run_dir)])
    return stable(run_dir)


def stable(run_dir):
    """What must not depend on a kill: every result of metrics.json, without
    timings, provenance and the resume log."""
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    so = {k: v for k, v in m["source_only"].items() if k != "seconds"}
    rounds = [{k: v for k, v in r.items() if k != "seconds"} for r in m["rounds"]]
    init = m.get("init")  # the cached source model; its path depends on the cache folder
    return {"source_only": so, "rounds": rounds, "finished": m.get("finished"), "classes": m.get("classes"),
            "num_target_train": m.get("num_target_train"), "init": Path(init).parent.name if init else None}


# The child sets its own signal dispositions to the defaults first: a parent that ignores SIGINT (a shell's
# background job, nohup, some CI runners) would otherwise pass the ignored SIGINT on, and Ctrl-C would do nothing.
DEFAULT_SIGNALS = ("import signal, runpy, sys\n"
                   "for s in ('SIGINT', 'SIGTERM', 'SIGHUP'):\n"
                   "    signal.signal(getattr(signal, s), signal.SIG_DFL)\n"
                   "sys.argv[0] = 'lse_fast.adapt'\n"
                   "runpy.run_module('lse_fast.adapt', run_name='__main__', alter_sys=True)\n")


def run_killed(args, kill_at):
    env = dict(os.environ, LSE_FAST_KILL_AT=kill_at, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", DEFAULT_SIGNALS, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def tmp_files(run_dir):
    return sorted(p.name for p in Path(run_dir).rglob("*.tmp"))


def leftover_of(name, run_dir):
    """The temporary file of `name` a kill left (NAME.<pid>-<random>.tmp), or None."""
    found = [f for f in tmp_files(run_dir) if fnmatch.fnmatch(f, f"{name}.*-*.tmp")]
    return found[0] if found else None


# (kill point, rounds finished on disk when killed, temporary file the kill leaves)
KILLS = {
    "start": ("start:1", None, None),  # right after the run directory is created
    "source-training": ("source:2", None, None),  # step 2 of 4 of the source training (own, empty cache)
    "scoring": ("score:3", 1, None),  # round 2, after its first scoring batch
    "selection": ("select:2", 1, None),  # round 2's selection
    "training": ("train:3", 1, None),  # round 2, after 1 of its 2 steps (3rd step of the run)
    "checkpoint-write": ("checkpoint:2", 0, "round_1.pt"),  # half of round 1's checkpoint written
    "metrics-write": ("metrics:3", 0, "metrics.json"),  # half of round 1's metrics entry written
}


@pytest.mark.parametrize("name", list(KILLS))
def test_resume_after_sigkill_gives_the_same_metrics(name, cache, reference, tmp_path):
    kill_at, done, leftover = KILLS[name]
    run_dir = tmp_path / "run"
    if name == "source-training":  # nothing cached: the source model is trained (and killed) here
        cache = str(tmp_path / "cache")
    p = run_killed(TINY + ["--cache-dir", cache, "--run-dir", str(run_dir)], kill_at)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    # what a kill leaves: a complete metrics.json (never a half-written one) and config.yaml
    partial = json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / runs_mod.LOCK).is_file()  # the killed run's lock file: stale (its flock died with it)
    if done is None:
        assert partial["source_only"] is None and partial["rounds"] == []
    else:
        assert [r["round"] for r in partial["rounds"]] == list(range(1, done + 1))
    if leftover is not None:
        left = leftover_of(leftover, run_dir)
        assert left is not None, tmp_files(run_dir)
        if leftover == "round_1.pt":
            assert not (run_dir / "checkpoints" / "round_1.pt").exists()
            with pytest.raises(Exception):  # noqa: B017  (a half-written checkpoint does not load)
                torch.load(run_dir / "checkpoints" / left, weights_only=True)
        else:
            with pytest.raises(json.JSONDecodeError):
                json.loads((run_dir / left).read_text())
    resumed = main(["--resume", str(run_dir)])
    assert stable(run_dir) == reference
    assert tmp_files(run_dir) == []
    assert [r["after_round"] for r in resumed["resumed"]] == [done or 0]


# signal -> (exit status, resumed here): Ctrl-C, kill / docker stop / Slurm preemption / torchrun, hangup
SIGNALS = {"INT": (130, True), "TERM": (143, True), "HUP": (129, False)}


@pytest.mark.parametrize("sig", list(SIGNALS))
def test_a_signal_leaves_a_resumable_directory(sig, cache, reference, tmp_path):
    """SIGINT, SIGTERM and SIGHUP in round 2's training: one line saying how
    to resume, exit status 128 + the signal, no traceback, nothing half
    written, the lock free; resumed, the uninterrupted run's metrics."""
    run_dir = tmp_path / "run"
    status, resume = SIGNALS[sig]
    p = run_killed(TINY + ["--cache-dir", cache, "--run-dir", str(run_dir)], f"train:3:{sig}")
    assert p.returncode == status, p.stderr[-2000:]
    assert p.stderr.splitlines()[-1] == (f"interrupted by SIG{sig}; continue with: python -m lse_fast.adapt "
                                         f"--resume {run_dir}")
    assert "Traceback" not in p.stderr
    assert [r["round"] for r in json.loads((run_dir / "metrics.json").read_text())["rounds"]] == [1]
    assert tmp_files(run_dir) == []
    if resume:  # options that do not change results may differ
        neutral = ["--keep-checkpoints", "last", "--num-threads", "1"] if sig == "TERM" else []
        main(["--resume", str(run_dir)] + neutral)
        assert stable(run_dir) == reference


def test_a_signal_during_a_write_takes_effect_after_it(cache, tmp_path):
    """SIGTERM half-way through round 1's metrics.json write (the
    checkpoint already written): the write and the round's record finish,
    then the run stops; no temporary file, round 1 complete on disk."""
    run_dir = tmp_path / "run"
    p = run_killed(TINY + ["--cache-dir", cache, "--run-dir", str(run_dir)], "metrics:4:TERM")
    assert p.returncode == 143, p.stderr[-2000:]
    assert "interrupted by SIGTERM; continue with" in p.stderr and "Traceback" not in p.stderr
    # metrics.json write 4: round 1's entry (writes 1 and 2: the new run, 3: the source-only result)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in m["rounds"]] == [1] and m["source_only"] is not None
    assert (run_dir / "checkpoints" / "round_1.pt").is_file() and tmp_files(run_dir) == []


def test_nan_loss_stops_the_round_and_keeps_the_last_checkpoint(cache, reference, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    real = training_mod.supervised_loss

    def nan_in_round_2(ctx, model, x, y, gamma, beta):
        loss, out = real(ctx, model, x, y, gamma, beta)
        if stage["round"] == 2:
            loss = loss * float("nan")
        return loss, out

    stage = {"round": 0}
    real_train = training_mod.train_round

    def tracking(ctx, model, scores, selection, round_index):
        stage["round"] = round_index
        return real_train(ctx, model, scores, selection, round_index)

    monkeypatch.setattr(training_mod, "supervised_loss", nan_in_round_2)
    monkeypatch.setattr(training_mod, "train_round", tracking)
    assert cli(TINY + ["--cache-dir", cache, "--run-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "round 2, step 1/2: the loss is nan" in err and "round_1.pt" in err
    assert "Traceback" not in err
    m = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in m["rounds"]] == [1] and m["stopped"]["round"] == 2
    assert (run_dir / "checkpoints" / "round_1.pt").is_file()
    assert not (run_dir / "checkpoints" / "round_2.pt").exists()
    # the checkpoint kept is the good model of round 1: resuming with a sane loss finishes the run as usual
    monkeypatch.setattr(training_mod, "supervised_loss", real)
    resumed = main(["--resume", str(run_dir)])
    assert "stopped" not in resumed
    assert stable(run_dir) == reference


def test_kill_hook_rejects_a_malformed_value(monkeypatch):
    monkeypatch.setenv("LSE_FAST_KILL_AT", "trian:2")
    with pytest.raises(ConfigError, match="LSE_FAST_KILL_AT .* STAGE:COUNT.*got 'trian:2'"):
        faults.point("train")
    monkeypatch.delenv("LSE_FAST_KILL_AT")
    faults.point("train")  # unset: nothing happens


def test_atomic_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    runs_mod.atomic_write(target, b'{"old": 1}')

    def fails_half_way(f, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs_mod, "_write_all", fails_half_way)
    with pytest.raises(OSError, match="cannot write .*metrics.json.*No space left on device.*--resume"):
        runs_mod.atomic_write(target, b'{"new": 2}')
    assert json.loads(target.read_text()) == {"old": 1}  # the previous complete version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # its temporary file removed


def test_a_directory_killed_before_metrics_json_is_resumable(tmp_path):
    """Killed between the two first writes: config.yaml only."""
    cfg = AdaptConfig(run_dir=str(tmp_path / "r"))
    with runs_mod.Run.create(cfg) as run:  # the run ends (its lock released)
        pass
    (run.path / "metrics.json").unlink()
    (run.path / "metrics.json.tmp").write_bytes(b'{"provenance": {"se')  # the interrupted write
    base = runs_mod.Run.load_config(run.path)
    assert base["seed"] == 0 and "run_dir" not in base
    with runs_mod.Run.resume(run.path, AdaptConfig()) as resumed:
        assert resumed.metrics["rounds"] == [] and resumed.metrics["source_only"] is None
    assert not (run.path / "metrics.json.tmp").exists()
    assert json.loads((run.path / "metrics.json").read_text())["resumed"][0]["after_round"] == 0


def test_an_empty_directory_left_by_a_kill_is_explained_and_reusable(tmp_path):
    empty = tmp_path / "r"
    empty.mkdir()
    (empty / "config.yaml.tmp").write_bytes(b"sourc")  # killed while writing the first file
    with pytest.raises(ConfigError, match="empty, not a run directory.*without --resume"):
        runs_mod.Run.load_config(empty)
    runs_mod.Run.check_new(AdaptConfig(run_dir=str(empty)))  # a new run may use it


def test_disk_full_mid_run_stops_cleanly_and_resumes(cache, reference, tmp_path, monkeypatch, capsys):
    """ENOSPC while round 1's checkpoint is written: exit status 1 naming the
    file, no temporary file, the source-only result kept; resumed once there
    is space, the run ends as an uninterrupted one."""
    run_dir = tmp_path / "run"
    real = runs_mod._write_all

    def full_at_round_1(f, data):
        if fnmatch.fnmatch(Path(f.name).name, "round_1.pt.*.tmp"):
            raise OSError(28, "No space left on device")
        real(f, data)

    monkeypatch.setattr(runs_mod, "_write_all", full_at_round_1)
    assert cli(TINY + ["--cache-dir", cache, "--run-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert f"error: lse_fast.adapt: cannot write {str(run_dir / 'checkpoints' / 'round_1.pt')!r}: No space left" in err
    assert tmp_files(run_dir) == [] and not (run_dir / "checkpoints" / "round_1.pt").exists()
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["source_only"] is not None and m["rounds"] == []
    monkeypatch.setattr(runs_mod, "_write_all", real)
    main(["--resume", str(run_dir)])
    assert stable(run_dir) == reference
