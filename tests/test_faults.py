"""Faults met inside a run: an image that cannot be decoded mid-epoch stops
the run with one error naming the file (DALI and PIL loaders alike), or with
--skip-bad-files is logged, skipped and counted; the loaders' ``on_bad_file``
hook behind it. (NaN losses and Ctrl-C: tests/test_resume.py.)"""

import json

import pytest
import torch

from lse_fast.adapt import cli
from lse_fast.data import from_spec, synthetic
from lse_fast.data.dali import dali_available
from lse_fast.data.pil import loader as pil_loader

LOADERS = ["pil"] + (["dali"] if dali_available() else [])
BAD = "synth_000001_000005_leftImg8bit.png"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny synthetic tree whose 6th target train image is truncated (its
    header intact, so the failure comes while decoding, mid-epoch)."""
    root = tmp_path_factory.mktemp("faulty")
    synthetic.ensure(root / "tree", num_source=8, num_target_train=8, num_target_val=4, size=(32, 64), seed=0)
    bad = root / "tree" / "target" / "leftImg8bit" / "train" / "synth" / BAD
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    return root / "tree", bad


def _args(data, tmp_path, loader):
    tree, _ = data
    return ["--source", f"gta5:{tree / 'source'}", "--target", f"cityscapes:{tree / 'target'}",
            "--image-size", "32x64", "--source-size", "32x64", "--pretrain-iters", "2", "--pretrain-batch-size", "4",
            "--rounds", "1", "--epochs", "1", "--batch-size", "4", "--source-batch-size", "2",
            "--score-batch-size", "4", "--no-progress", "--no-plots", "--loader", loader, "--device", "cpu",
            "--cache-dir", str(tmp_path.parent / "cache"), "--run-dir", str(tmp_path / "run")]


@pytest.mark.parametrize("loader", LOADERS)
def test_corrupt_image_mid_epoch_stops_with_the_file_named(data, tmp_path, loader, capsys):
    assert cli(_args(data, tmp_path, loader)) == 1
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert errors == [f"error: lse_fast.data: cannot decode image file {str(data[1])!r}: image file is truncated"]
    assert "Traceback" not in err
    # the source-only result is kept and the directory resumes once the file is fixed
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["source_only"] is not None and m["rounds"] == []


@pytest.mark.parametrize("loader", LOADERS)
def test_skip_bad_files_logs_skips_and_counts(data, tmp_path, loader, capsys):
    assert cli(_args(data, tmp_path, loader) + ["--skip-bad-files"]) == 0
    out = capsys.readouterr().out
    path = str(data[1])
    assert out.count("[data] skipping an unreadable file (--skip-bad-files)") == 1  # logged once
    assert f"[data] skipped 1 unreadable file(s) (--skip-bad-files): {path}" in out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert list(m["skipped_files"]) == [path] and "image file is truncated" in m["skipped_files"][path]
    assert m["finished"] and len(m["rounds"]) == 1
    assert 5 not in m["rounds"][0]["selected_images"]  # never scored, so never selected


@pytest.mark.parametrize("loader", LOADERS)
def test_loader_on_bad_file_skips_the_sample(data, loader):
    tree, bad = data
    ds = from_spec(f"cityscapes:{tree / 'target'}", split="train")
    seen = []

    def on_bad(path, message):
        seen.append((path, message))

    if loader == "dali":
        from lse_fast.data import loader as make
    else:
        make = pil_loader
    batches = list(make(ds, batch_size=4, size=(32, 64), on_bad_file=on_bad, num_threads=1))
    idx = torch.cat([b["index"].cpu() for b in batches]).tolist()
    assert idx == [0, 1, 2, 3, 4, 6, 7]
    assert [b["image"].shape[0] for b in batches] == [4, 3]
    assert [p for p, _ in seen] == [str(bad)]
    ref = list(pil_loader(ds, batch_size=4, size=(32, 64), on_bad_file=lambda p, m: None))
    # the kept images are those of the PIL oracle (within the DALI/PIL resize tolerance of tests/test_data.py)
    err = (torch.cat([b["image"].cpu() for b in batches]) - torch.cat([b["image"] for b in ref])).abs().max()
    assert float(err) < 2e-3
    with pytest.raises(RuntimeError, match=f"cannot decode image file '.*{BAD}'"):
        list(make(ds, batch_size=4, size=(32, 64), num_threads=1))
    with pytest.raises(TypeError, match="`on_bad_file` must be None or a callable"):
        make(ds, batch_size=4, on_bad_file="skip")
