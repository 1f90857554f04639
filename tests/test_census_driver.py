"""Census of bad driver inputs (``python -m lse_fast.adapt``): one table, one
case per row. Each bad option, option combination, run directory, resume
target, config file or failing disk must give one clear line naming the
option or file and what was expected, exit status 2 (bad input, nothing
written) or 1 (the run failed), never a traceback; a run directory that
is damaged, changed or in use by another run is left exactly as it was.
The "Driver" table of
docs/reliability.md lists the same cases."""

import errno
import importlib
import json
import re
from pathlib import Path

import pytest
import torch

from lse_fast.adapt import cli
from lse_fast.adapt import runs as runs_mod
from lse_fast.adapt.config import AdaptConfig
from lse_fast.adapt.context import build_model

cli_mod = importlib.import_module("lse_fast.adapt.cli")  # the module (lse_fast.adapt.cli is also the function)

# The synthetic benchmark at its smallest, for the few cases that get as far as loading data.
TINY = ["--synthetic-source", "4", "--synthetic-train", "4", "--synthetic-val", "2", "--image-size", "16x32",
        "--source-size", "16x32", "--no-progress", "--no-plots", "--loader", "pil"]


def _round(r):
    return {"round": r, "portion": 0.1, "selected": 1, "selected_per_class": [], "thresholds": [], "loss": 0.5,
            "miou": 0.1, "per_class_iou": [], "seconds": {}}


def _make_run(tmp, rounds=0):
    """A run directory as Run.create leaves it (optionally claiming finished rounds); its lock released."""
    with runs_mod.Run.create(AdaptConfig(run_dir=str(tmp / "old"))) as run:
        if rounds:
            run.metrics["source_only"] = {"miou": 0.1, "per_class_iou": []}
            run.metrics["rounds"] = [_round(r) for r in range(1, rounds + 1)]
            run.save_metrics()
    return run.path


def _held(path):
    """`path` (made if missing) with its run-directory lock held by this process, as a live run holds it
    (released after the case by runs.release_locks)."""
    path.mkdir(parents=True, exist_ok=True)
    runs_mod.RunLock.acquire(path)
    return path


def _edit(path, name, old, new):
    f = path / name
    f.write_text(f.read_text().replace(old, new))
    return path


def _unexpected(monkeypatch):
    def fails():
        raise KeyError("round")

    monkeypatch.setattr(cli_mod.faults, "check", fails)


def _write(tmp, name, text):
    p = tmp / name
    p.write_text(text)
    return p


def _no_space(monkeypatch):
    def full(f, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs_mod, "_write_all", full)


def _not_writable(monkeypatch, tmp):
    real = runs_mod.os.access
    monkeypatch.setattr(runs_mod.os, "access", lambda p, mode: False if Path(p) == tmp else real(p, mode))


# id: (argv given tmp (a fresh folder) and run (tmp / "run"), expected exit status, pattern of the message,
#      setup(tmp, monkeypatch) or None). Every argv names --run-dir or --resume and --cache-dir.
CASES = {
    # --- unknown or malformed options (argparse) -----------------------------
    "unknown-option-typo": (lambda t, r: ["--portion-stat", "0.2"], 2,
                            r"unknown option --portion-stat; did you mean --portion-start\?", None),
    "bad-choice-ops": (lambda t, r: ["--ops", "fast"], 2, r"--ops: invalid choice: 'fast'", None),
    "bad-preset": (lambda t, r: ["--preset", "paper-gta6-deeplab"], 2,
                   r"--preset: invalid choice: 'paper-gta6-deeplab' \(choose from .*paper-gta5-deeplab", None),
    "bad-keep-checkpoints": (lambda t, r: ["--keep-checkpoints", "some"], 2,
                             r"--keep-checkpoints: invalid choice: 'some'", None),
    "size-not-hxw": (lambda t, r: ["--image-size", "64"], 2, r"`image_size` must be HxW or H,W .*got '64'", None),
    "size-not-int": (lambda t, r: ["--source-size", "64xabc"], 2, r"`source_size` must be HxW", None),
    "lr-not-a-number": (lambda t, r: ["--lr", "fast"], 2, r"--lr: invalid float value: 'fast'", None),
    # --- values out of range --------------------------------------------------
    "size-too-small": (lambda t, r: ["--image-size", "1x64"], 2,
                       r"`image_size` must be two sizes H, W of at least 2, got \(1, 64\)", None),
    "portion-start-zero": (lambda t, r: ["--portion-start", "0"], 2, r"`portion_start` must be in \(0, 1\], got 0", None),
    "portion-stop-below-start": (lambda t, r: ["--portion-start", "0.5", "--portion-stop", "0.3"], 2,
                                 r"`portion_stop` must be in \[portion_start, 1\], got 0.3", None),
    "portion-step-negative": (lambda t, r: ["--portion-step", "-0.05"], 2, r"`portion_step` must be positive", None),
    "rounds-zero": (lambda t, r: ["--rounds", "0"], 2, r"`rounds` must be a positive integer or none, got 0", None),
    "epochs-zero": (lambda t, r: ["--epochs", "0"], 2, r"`epochs` must be positive, got 0", None),
    "lr-negative": (lambda t, r: ["--lr=-1e-4"], 2, r"`lr` must be positive, got -0.0001", None),
    "gamma-negative": (lambda t, r: ["--gamma", "-1"], 2, r"`gamma` must be >= 0, got -1", None),
    "batch-size-zero": (lambda t, r: ["--batch-size", "0"], 2, r"`batch_size` must be a positive integer, got 0", None),
    "num-classes-zero": (lambda t, r: ["--num-classes", "0"], 2,
                         r"`num_classes` must be 19 \(Cityscapes trainIds\) or 16 \(SYNTHIA's 16 classes\), got 0", None),
    "patch-scale-above-one": (lambda t, r: ["--patch-scale", "1.5"], 2, r"`patch_scale` must be in \(0, 1\], got 1.5", None),
    "device-unknown": (lambda t, r: ["--device", "tpu"], 2, r"`device` must be auto, cpu, cuda or cuda:N, got 'tpu'", None),
    # --- conflicting options ----------------------------------------------------
    "verify-with-reference-ops": (lambda t, r: ["--verify", "--ops", "reference"], 2,
                                  r"--verify compares the fused ops .*use it with --ops fused, got --ops reference", None),
    "synthetic-source-real-target": (lambda t, r: ["--target", f"cityscapes:{t}"], 2,
                                     r"`source` and `target` must both be 'synthetic' or both be KIND:PATH", None),
    "dataset-kind-unknown": (lambda t, r: ["--source", f"imagenet:{t}", "--target", f"cityscapes:{t}"], 2,
                             r"`source` must be 'synthetic' or KIND:PATH with KIND one of gta5, synthia", None),
    "dataset-path-missing": (lambda t, r: ["--source", f"gta5:{t}/nowhere", "--target", f"cityscapes:{t}"], 2,
                             r"`source` path '.*nowhere' does not exist", None),
    "init-missing": (lambda t, r: ["--init", str(t / "none.pt")], 2, r"`init` checkpoint '.*none.pt' does not exist", None),
    "init-not-a-checkpoint": (lambda t, r: TINY + ["--init", str(_write(t, "notes.pt", "not a checkpoint"))], 2,
                              r"`init` checkpoint '.*notes.pt'", None),
    # --- run directory and disk -------------------------------------------------
    "run-dir-holds-a-run": (lambda t, r: ["--run-dir", str(_make_run(t))], 2,
                            r"run directory '.*old' already holds a run; continue it with --resume", None),
    "run-dir-not-empty": (lambda t, r: ["--run-dir", str(_write(t, "x", "") and t)], 2,
                          r"`run_dir` '.*' exists and is not empty \(holds x\); give a new or empty directory", None),
    "run-dir-is-a-file": (lambda t, r: ["--run-dir", str(_write(t, "file", "x"))], 2,
                          r"`run_dir` '.*file' exists and is not a directory", None),
    "run-dir-under-a-file": (lambda t, r: ["--run-dir", str(_write(t, "file", "x") / "run")], 2,
                             r"`run_dir` '.*file/run': '.*file' is not a directory", None),
    "run-dir-not-writable": (lambda t, r: [], 2, r"`run_dir` '.*run' cannot be written \('.*' is not writable\)",
                             lambda t, mp: _not_writable(mp, t)),
    "disk-full-enospc": (lambda t, r: [], 1,
                         r"cannot write '.*config.yaml': No space left on device \(errno 28\); free some space",
                         lambda t, mp: _no_space(mp)),
    "cache-dir-is-a-file": (lambda t, r: ["--cache-dir", str(_write(t, "cache", "x"))], 2,
                            r"`cache_dir` '.*cache' exists and is not a directory", None),
    # --- --resume ----------------------------------------------------------------
    "resume-missing-dir": (lambda t, r: ["--resume", str(t / "nowhere")], 2, r"--resume '.*nowhere': no such directory", None),
    "resume-not-a-run-dir": (lambda t, r: ["--resume", str(_write(t, "x", "") and t)], 2,
                             r"--resume '.*': no config.yaml there \(not a run directory\)", None),
    "resume-empty-dir": (lambda t, r: ["--resume", str(t)], 2,
                         r"--resume '.*': the directory is empty, not a run directory .*without --resume", None),
    "resume-bad-metrics-json": (lambda t, r: ["--resume", str(_make_run(t))], 2,
                                r"--resume '.*old': metrics.json is not valid JSON .*the file is left as it is", None),
    "resume-metrics-round-without-fields": (lambda t, r: ["--resume", str(_make_run(t))], 2,
                                            r"--resume '.*old': metrics.json is not the metrics of a run: rounds\[0\] "
                                            r"has no 'round'; .*the file is left as it is", None),
    "resume-metrics-not-an-object": (lambda t, r: ["--resume", str(_make_run(t))], 2,
                                     r"metrics.json is not the metrics of a run: expected an object, got list", None),
    "resume-metrics-rounds-out-of-order": (lambda t, r: ["--resume", str(_make_run(t))], 2,
                                           r"metrics.json is not the metrics of a run: rounds\[0\] is round 2, "
                                           r"expected round 1", None),
    "resume-bad-config-yaml": (lambda t, r: ["--resume", str(_make_run(t))], 2,
                               r"--resume '.*old': config.yaml is not valid YAML", None),
    "resume-config-yaml-empty": (lambda t, r: ["--resume", str(_make_run(t))], 2,
                                 r"--resume '.*old': config.yaml is empty; it must hold the run's mapping of options",
                                 None),
    "resume-config-yaml-bad-value": (lambda t, r: ["--resume", str(_make_run(t))], 2,
                                     r"`seed` in the run's config.yaml \('.*old/config.yaml'\) must be int, got 'abc'",
                                     None),
    "resume-checkpoint-missing": (lambda t, r: ["--resume", str(_make_run(t, rounds=1))] + TINY, 2,
                                  r"round 1 is finished but its checkpoint '.*round_1.pt' is missing", None),
    "resume-checkpoint-damaged": (lambda t, r: ["--resume", str(_make_run(t, rounds=1))] + TINY, 2,
                                  r"--resume: checkpoint '.*round_1.pt' is not a readable round checkpoint "
                                  r"\(truncated or damaged: .*\); the run cannot continue", None),
    "resume-checkpoint-no-config": (lambda t, r: ["--resume", str(_make_run(t, rounds=1))] + TINY, 2,
                                    r"checkpoint '.*round_1.pt' is not a readable round checkpoint \(no 'config' "
                                    r"entry\)", None),
    "resume-checkpoint-other-round": (lambda t, r: ["--resume", str(_make_run(t, rounds=1))] + TINY, 2,
                                      r"checkpoint '.*round_1.pt' is not a readable round checkpoint \(it records "
                                      r"round 2 but is the file of round 1\)", None),
    "resume-other-num-classes": (lambda t, r: ["--resume", str(_make_run(t, rounds=1)), "--num-classes", "16"], 2,
                                 r"--resume '.*old': the configuration differs from the one the run was made with: "
                                 r"num_classes 19 -> 16 \(given with --resume; recorded in metrics.json provenance\);"
                                 r".*start a new run: python -m lse_fast.adapt --config .*old/config.yaml --run-dir "
                                 r"NEW_DIR --num-classes 16", None),
    "resume-changed-option": (lambda t, r: ["--resume", str(_make_run(t)), "--lr", "0.5", "--seed", "3"], 2,
                              r"the configuration differs .*: lr 0.0001 -> 0.5 \(given with --resume; .*\), seed 0 -> 3 ",
                              None),
    "resume-edited-config-yaml": (lambda t, r: ["--resume", str(_edit(_make_run(t), "config.yaml",
                                                                      "seed: 0", "seed: 5"))], 2,
                                  r"the configuration differs .*: seed 0 -> 5 \(config.yaml; recorded in "
                                  r"metrics.json provenance\)", None),
    "resume-edited-checkpoint-config": (lambda t, r: ["--resume", str(_make_run(t, rounds=1))], 2,
                                        r"the configuration differs .*: gamma 2.0 -> 3.0 \(config.yaml; "
                                        r"recorded in checkpoints/round_1.pt\)", None),
    "run-dir-in-use": (lambda t, r: ["--run-dir", str(_held(t / "busy"))], 2,
                       r"run directory '.*busy' is in use by another run \(pid \d+ on host .*, since .*\); wait for it "
                       r"to end \(or stop it\), or choose another --run-dir", None),
    "resume-in-use": (lambda t, r: ["--resume", str(_held(_make_run(t)))], 2,
                      r"run directory '.*old' is in use by another run \(pid \d+ on host", None),
    "unexpected-exception": (lambda t, r: [], 1,
                             r"error: lse_fast.adapt: unexpected KeyError: 'round' \(a bug, or a file or input this "
                             r"run did not expect\); re-run with --debug \(or LSE_FAST_DEBUG=1\) to see the traceback",
                             lambda t, mp: _unexpected(mp)),
    "resume-conflicting-override": (lambda t, r: ["--resume", str(_make_run(t)), "--verify", "--ops", "reference"], 2,
                                    r"--verify compares the fused ops", None),
    # --- --config files ------------------------------------------------------------
    "config-missing": (lambda t, r: ["--config", str(t / "none.yaml")], 2, r"config file '.*none.yaml' does not exist", None),
    "config-not-yaml": (lambda t, r: ["--config", str(_write(t, "c.yaml", "lr: [1,"))], 2,
                        r"config file '.*c.yaml' is not valid YAML", None),
    "config-not-a-mapping": (lambda t, r: ["--config", str(_write(t, "c.yaml", "- lr\n- gamma\n"))], 2,
                             r"config file '.*c.yaml' must hold a mapping of options", None),
    "config-unknown-key": (lambda t, r: ["--config", str(_write(t, "c.yaml", "lrr: 0.1\n"))], 2,
                           r"unknown option 'lrr' in config file '.*c.yaml'; did you mean 'lr'\?", None),
    "config-wrong-type": (lambda t, r: ["--config", str(_write(t, "c.yaml", "batch_size: 2.5\n"))], 2,
                          r"`batch_size` in config file '.*c.yaml' must be int, got 2.5", None),
    # --- test hook --------------------------------------------------------------------
    "kill-hook-malformed": (lambda t, r: [], 2, r"LSE_FAST_KILL_AT \(a test hook\) must be STAGE:COUNT",
                            lambda t, mp: mp.setenv("LSE_FAST_KILL_AT", "train")),
}

# Damage applied after the argv builder made the run directory (cases whose file must be broken).
DAMAGE = {
    "resume-bad-metrics-json": ("old/metrics.json", '{"rounds": [1,'),
    "resume-metrics-round-without-fields": ("old/metrics.json", '{"provenance": {}, "source_only": {"miou": 0.1, '
                                            '"per_class_iou": []}, "rounds": [{"miou": 0.2}]}'),
    "resume-metrics-not-an-object": ("old/metrics.json", "[1, 2]"),
    "resume-metrics-rounds-out-of-order": ("old/metrics.json", json.dumps(
        {"provenance": {}, "source_only": {"miou": 0.1, "per_class_iou": []}, "rounds": [_round(2)]})),
    "resume-bad-config-yaml": ("old/config.yaml", "lr: [1,"),
    "resume-config-yaml-empty": ("old/config.yaml", ""),
    "resume-config-yaml-bad-value": ("old/config.yaml", "seed: abc\n"),
    "resume-checkpoint-damaged": ("old/checkpoints/round_1.pt", "not a checkpoint"),
}
# round-1 checkpoints of the default 19-class model: (file, what it records)
DAMAGE_MODEL = {
    "resume-other-num-classes": ("old/checkpoints/round_1.pt", {"round": 1, "config": AdaptConfig().to_dict()}),
    "resume-checkpoint-no-config": ("old/checkpoints/round_1.pt", {"round": 1}),
    "resume-checkpoint-other-round": ("old/checkpoints/round_1.pt", {"round": 2, "config": AdaptConfig().to_dict()}),
    "resume-edited-checkpoint-config": ("old/checkpoints/round_1.pt",
                                        {"round": 1, "config": dict(AdaptConfig().to_dict(), gamma=2.0)}),
}

if torch.cuda.is_available():
    CASES["device-cuda-index"] = (lambda t, r: ["--device", "cuda:99"], 2, r"`device` must be cuda:N with N in", None)
else:
    CASES["device-cuda-missing"] = (lambda t, r: ["--device", "cuda"], 2,
                                    r"`device` is 'cuda' but torch sees no CUDA device \(use --device cpu or auto\)", None)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_driver_input(case, tmp_path, monkeypatch, capsys):
    build, status, pattern, setup = CASES[case]
    work = tmp_path / "w"
    work.mkdir()
    run_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # a default runs/<stamp> would land here
    if setup is not None:
        setup(tmp_path, monkeypatch)
    argv = build(work, run_dir)
    if case in DAMAGE:
        name, text = DAMAGE[case]
        (work / name).write_text(text)
    if case in DAMAGE_MODEL:
        name, record = DAMAGE_MODEL[case]
        torch.save({**record, "model": build_model(AdaptConfig()).state_dict()}, work / name)
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file() and p.name != runs_mod.LOCK}
    if "--run-dir" not in argv and "--resume" not in argv:
        argv = argv + ["--run-dir", str(run_dir)]
    if "--cache-dir" not in argv:
        argv = argv + ["--cache-dir", str(tmp_path / "cache")]
    try:
        rc = cli(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    finally:
        runs_mod.release_locks()  # those _held took
    err = capsys.readouterr().err
    assert rc == status, err
    assert re.search(pattern, err), f"{case}: expected /{pattern}/ in:\n{err}"
    assert "Traceback" not in err
    starts = [ln for ln in err.splitlines() if ln.startswith(("error: ", "python -m lse_fast.adapt: error: "))]
    assert len(starts) == 1, err  # one error, stated once
    # bad input writes nothing: the new run directory is not there (or left as it was)
    assert not run_dir.exists()
    assert not (tmp_path / "runs").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    # and an existing run directory (damaged or not) is left exactly as it was
    after = {p: p.read_bytes() for p in work.rglob("*") if p.is_file() and p.name != runs_mod.LOCK}
    assert after == before


def test_census_is_large_enough():
    assert len(CASES) >= 60
    assert json.dumps(sorted(CASES))  # ids are plain strings (the docs/reliability.md table lists them)
