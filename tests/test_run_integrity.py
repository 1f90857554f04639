"""Run-directory integrity (issue 21): one writer per run directory (the
race of two processes claiming one directory, released together at a
barrier; a stale lock: tests/test_resume.py's SIGKILL cases), termination
signals held back during a write, the --debug flag, and the list of
options a resumed run may change. Signals sent to a whole run:
tests/test_resume.py (one process) and tests/test_distributed.py
(torchrun); bad or changed run directories: tests/test_census_driver.py."""

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lse_fast.adapt import cli, runs, signals
from lse_fast.adapt.config import AdaptConfig

ROOT = Path(__file__).resolve().parents[1]
REPETITIONS = 20

# One racer: for each repetition, wait at a two-process file barrier (spinning, so both leave it within about a
# millisecond), then claim base/r<i> as a new run with its own seed, write what a run writes first (config.yaml,
# metrics.json, a round-0 checkpoint, metrics.json again) and end; print one JSON line per repetition.
RACER = r"""
import json, os, sys, time
from pathlib import Path
import torch
from lse_fast.adapt import runs
from lse_fast.adapt.config import AdaptConfig, ConfigError
base, me, other, reps = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
model = torch.nn.Linear(2, 2)
for i in range(reps):
    (base / f"ready{i}.{me}").touch()
    t0 = time.monotonic()
    while not (base / f"ready{i}.{other}").exists():
        if time.monotonic() - t0 > 60:
            sys.exit("the other racer never came")
    try:
        with runs.Run.create(AdaptConfig(run_dir=str(base / f"r{i}"), seed=int(me))) as run:
            run.save_checkpoint(0, model)
            run.metrics["source_only"] = {"miou": 0.5, "per_class_iou": []}
            run.save_metrics()
        print(json.dumps({"rep": i, "ok": True, "pid": os.getpid()}), flush=True)
    except ConfigError as e:
        print(json.dumps({"rep": i, "ok": False, "pid": os.getpid(), "error": str(e)}), flush=True)
"""


def test_two_processes_claiming_one_directory_leave_one_run_and_one_refusal(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), me, other, str(REPETITIONS)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for me, other in (("1", "2"), ("2", "1"))]
    outs = [r.communicate(timeout=240) for r in racers]
    for r, (out, err) in zip(racers, outs):
        assert r.returncode == 0, err[-3000:]
    results = [{e["rep"]: e for e in map(json.loads, out.splitlines())} for out, _ in outs]
    kinds = {"in use": 0, "already holds": 0}
    for i in range(REPETITIONS):
        a, b = results[0][i], results[1][i]
        assert a["ok"] != b["ok"], (i, a, b)  # exactly one run, one refusal
        winner = 1 if a["ok"] else 2
        refusal = (b if a["ok"] else a)["error"]
        d = tmp_path / f"r{i}"
        assert str(d) in refusal
        if "is in use by another run (pid " in refusal:  # names the winner, a live process
            assert f"(pid {(a if a['ok'] else b)['pid']} on host {os.uname().nodename}, since " in refusal, refusal
            kinds["in use"] += 1
        else:  # the winner had already finished when the loser looked
            assert "already holds a run" in refusal, refusal
            kinds["already holds"] += 1
        # the directory is the winner's, complete and consistent
        assert sorted(p.name for p in d.iterdir()) == [".lse_fast.lock", "checkpoints", "config.yaml",
                                                         "metrics.json", "plots"]
        cfg = runs.Run.load_config(d)
        m = json.loads((d / "metrics.json").read_text())
        assert cfg["seed"] == m["provenance"]["seed"] == m["provenance"]["config"]["seed"] == winner
        assert m["source_only"] == {"miou": 0.5, "per_class_iou": []}
        assert runs.read_checkpoint_record(d / "checkpoints" / "round_0.pt", 0)["seed"] == winner
        assert [p.name for p in (d / "checkpoints").iterdir()] == ["round_0.pt"]  # no temporary file left
        runs.RunLock.acquire(d).release()  # and the lock is free again
    print(f"refusals: {kinds}")


def test_temporary_names_are_unique_and_a_failed_write_removes_only_its_own(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    names = {runs.temporary_name(target).name for _ in range(100)}
    assert len(names) == 100 and all(n.startswith(f"metrics.json.{os.getpid()}-") for n in names)
    other = tmp_path / f"metrics.json.{os.getpid() + 1}-0000.tmp"  # another writer's temporary file
    other.write_bytes(b"theirs")

    def fails(f, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs, "_write_all", fails)
    with pytest.raises(OSError, match="No space left"):
        runs.atomic_write(target, b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name] and other.read_bytes() == b"theirs"


def test_discard_removes_only_what_its_own_run_wrote(tmp_path):
    d = tmp_path / "given"
    d.mkdir()  # an empty directory given as --run-dir: kept by discard
    run = runs.Run.create(AdaptConfig(run_dir=str(d)))
    (d / "notes.txt").write_text("the user's")
    run.discard()
    assert sorted(p.name for p in d.iterdir()) == [runs.LOCK, "notes.txt"]
    new = tmp_path / "new"
    runs.Run.create(AdaptConfig(run_dir=str(new))).discard()
    assert not new.exists()  # made by the run, empty again: removed


@pytest.fixture
def term_handled():
    """SIGTERM at its default disposition for the test (whatever the parent
    shell set), restored afterwards."""
    old = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, old)


def test_a_signal_inside_a_deferred_block_takes_effect_when_it_ends(term_handled):
    done = []
    with signals.handling():
        with pytest.raises(signals.Interrupted) as info:
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                done.append("write finished")
        assert done == ["write finished"]
        assert info.value.signum == signal.SIGTERM and info.value.exit_status == 143
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal while stopping is only noted
        time.sleep(0.05)
    assert signals.received() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the previous disposition is back


def test_an_ignored_signal_stays_ignored():
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals.handling():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)


cli_mod = importlib.import_module("lse_fast.adapt.cli")


@pytest.mark.parametrize("how", ["--debug", "LSE_FAST_DEBUG=1", None])
def test_debug_shows_the_traceback_of_an_unexpected_error(how, tmp_path, monkeypatch, capsys):
    def fails():
        raise KeyError("round")

    monkeypatch.setattr(cli_mod.faults, "check", fails)
    monkeypatch.delenv("LSE_FAST_DEBUG", raising=False)
    argv = ["--run-dir", str(tmp_path / "run")]
    if how == "--debug":
        argv.append("--debug")
    elif how:
        monkeypatch.setenv("LSE_FAST_DEBUG", "1")
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: lse_fast.adapt: unexpected KeyError: 'round'")
    assert ("Traceback (most recent call last)" in err) == (how is not None)


def test_result_neutral_options_are_fields_and_the_fingerprint_ignores_them():
    names = {f.name for f in dataclasses.fields(AdaptConfig)}
    assert runs.RESULT_NEUTRAL <= names
    assert "seed" in runs.result_fields() and "progress" not in runs.result_fields()
    a = AdaptConfig()
    assert runs.config_fingerprint(a) == runs.config_fingerprint(
        dataclasses.replace(a, progress=False, plots=False, export=True, keep_checkpoints="last", num_threads=7))
    assert runs.config_fingerprint(a) != runs.config_fingerprint(dataclasses.replace(a, seed=1))
    assert runs.config_differences(runs.result_config(a), dataclasses.replace(a, lr=0.5, seed=2), "x") == [
        ("lr", 1e-4, 0.5), ("seed", 0, 2)]
