"""One tiny driver run with --export --oracle under the authors' pseudo-label
variants (min-max entropy, bilinear filter map) and whole-image patches:
the exported pseudo-labels are the labels trained on, the oracle is the
model trained on the target labels, and python -m lse_fast.report turns the
run (and an evaluator JSON) into the paper's table and a picture grid."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from lse_fast.adapt import main
from lse_fast.adapt import training as training_mod
from tests.test_adapt import TINY

VARIANT = ["--entropy-norm", "minmax", "--filter-interp", "bilinear", "--patch-scale", "1.0", "--rounds", "1",
           "--no-plots", "--export", "--oracle", "--loader", "pil"]


@pytest.fixture(scope="module")
def variant_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    run_dir = tmp_path_factory.mktemp("runs") / "variant"
    trained = {}
    original = training_mod.make_patches

    def recording(ctx, plan, scores, batch):
        patches, labels = original(ctx, plan, scores, batch)
        for j, p in enumerate(batch["index"].cpu().tolist()):
            for q in range(plan.k):
                trained.setdefault(plan.chosen[p], []).append(labels[j * plan.k + q].cpu().clone())
        return patches, labels

    mp = pytest.MonkeyPatch()
    mp.setattr(training_mod, "make_patches", recording)
    try:
        metrics = main(TINY + ["--cache-dir", str(cache), "--run-dir", str(run_dir)] + VARIANT)
    finally:
        mp.undo()
    return run_dir, metrics, trained, cache


def test_exported_pseudo_labels_are_the_labels_trained_on(variant_run):
    from lse_fast.adapt.config import from_dict
    from lse_fast.adapt.runs import Run
    from lse_fast.data import Cityscapes
    from lse_fast.evaluate.writer import LABEL_ID_TO_TRAIN_ID, prediction_path

    run_dir, metrics, trained, cache = variant_run
    cfg = from_dict(Run.load_config(run_dir))
    assert (cfg.entropy_norm, cfg.filter_interp, cfg.patch_scale) == ("minmax", "bilinear", 1.0)
    chosen = metrics["rounds"][0]["selected_images"]
    assert sorted(trained) == sorted(chosen)  # every selected image was trained on
    target = Cityscapes(next(cache.glob("synthetic/*/target")), "train")
    export = run_dir / "export" / "round_1" / "pseudo_labels"
    assert len(list((export / "labelIds").rglob("*.png"))) == len(chosen)
    some_left_out = False
    for i in chosen:
        path = target.image_path(i)
        got = np.asarray(Image.open(export / prediction_path(path, "trainIds")))
        label_ids = np.asarray(Image.open(export / prediction_path(path, "labelIds")))
        assert np.array_equal(LABEL_ID_TO_TRAIN_ID[label_ids], got)
        for lab in trained[i]:  # patch_scale 1: each patch is the whole image, its labels the whole image's
            assert np.array_equal(lab.numpy(), got), path
        some_left_out |= bool((got == 255).any())
    assert some_left_out  # the filter took part: pixels above their class's threshold are left out


def test_oracle_is_trained_on_the_target_labels_and_recorded(variant_run):
    from lse_fast.adapt.config import from_dict
    from lse_fast.adapt.context import make_context
    from lse_fast.adapt.evaluation import evaluate_target
    from lse_fast.adapt.runs import Run

    run_dir, metrics, _, cache = variant_run
    oracle = metrics["oracle"]
    assert oracle["steps"] == 8 and 0.0 <= oracle["miou"] <= 1.0
    assert oracle["protocol"]["align_corners"] is False
    assert len(list((cache / "source_models").glob("*.pt"))) == 2  # the source model and the oracle
    assert oracle["cached_model"] != metrics["init"]
    cfg = from_dict(Run.load_config(run_dir))
    cfg.progress = False
    ctx, model = make_context(cfg)
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "oracle.pt", weights_only=True)["model"])
    assert evaluate_target(ctx, model)["miou"] == pytest.approx(oracle["miou"])
    # the same weights as the source stage trained on the labelled target train split
    src = torch.load(oracle["cached_model"], weights_only=True)["model"]
    assert all(torch.equal(src[k], v) for k, v in model.state_dict().items())


def test_oracle_needs_target_labels():
    from lse_fast.adapt.config import ConfigError
    from lse_fast.adapt.context import View
    from lse_fast.adapt.oracle import check_oracle_data

    with pytest.raises(ConfigError, match="--oracle trains on the target train split's labels"):
        check_oracle_data(SimpleNamespace(target_base=View([1, 2])))


def test_report_table_and_picture_grid(variant_run, tmp_path, capsys):
    from lse_fast.report import cli, main as report

    run_dir, metrics, _, _ = variant_run
    other = tmp_path / "eval.json"  # a result of python -m lse_fast.evaluate (16-class head)
    names16 = [n for k, n in enumerate(json.loads((run_dir / "metrics.json").read_text())["class_names"])
               if k not in (9, 14, 16)]
    other.write_text(json.dumps({"per_class_iou": {n: 0.5 for n in names16}, "miou": 0.5}))
    out = report([str(run_dir), str(other), "--out", str(tmp_path / "rep"), "--html", "--images", "2"])
    rows = out["rows"]
    assert [r["name"] for r in rows] == ["variant: source-only", "variant: round 1 (p=0.30)", "variant: oracle", "eval"]
    so, r1, orc, ev = rows
    assert r1["delta"] == pytest.approx(metrics["rounds"][0]["miou"] - metrics["source_only"]["miou"])
    assert r1["gap"] == pytest.approx(metrics["rounds"][0]["miou"] - metrics["oracle"]["miou"])
    assert so["miou19"] == pytest.approx(metrics["source_only"]["miou19"])
    assert math.isnan(ev["miou19"]) and ev["miou16"] == pytest.approx(0.5) and math.isnan(ev["iou"][9])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| variant: round 1 (p=0.30) |" in md and "gap to oracle" in md and "mIoU13" in md
    assert f"{100 * r1['delta']:+.1f}" in md and "align_corners=False" in md
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "variant_examples.png" in md and "<table>" in page and "align_corners=False" in page
    grid = np.asarray(Image.open(tmp_path / "rep" / "variant_examples.png").convert("RGB"))
    assert grid.shape[0] > 100 and grid.shape[1] > 400 and grid.std() > 10  # a drawn picture, not blank
    # nothing replaced without --overwrite; a bad input is named
    assert cli([str(run_dir), "--out", str(tmp_path / "rep"), "--images", "0"]) == 2
    assert "report.md' exists" in capsys.readouterr().err
    assert cli([str(tmp_path / "nowhere"), "--out", str(tmp_path / "rep2")]) == 2
    assert "nowhere' does not exist" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert cli([str(tmp_path / "bad.json"), "--out", str(tmp_path / "rep2")]) == 2
    assert "neither a run's metrics.json nor a result" in capsys.readouterr().err


def test_report_names_a_missing_pseudo_label(variant_run, tmp_path, capsys):
    import shutil

    from lse_fast.report import cli

    run_dir, metrics, _, _ = variant_run
    copy = tmp_path / "variant"
    shutil.copytree(run_dir, copy)
    victim = next((copy / "export" / "round_1" / "pseudo_labels" / "trainIds").rglob("*.png"))
    victim.unlink()
    assert cli([str(copy), "--out", str(tmp_path / "rep"), "--images", "1"]) == 1
    assert "no prediction for image" in capsys.readouterr().err


def test_driver_protocol_choice_and_evaluator_size_note(variant_run, capsys):
    from lse_fast.adapt.config import from_dict
    from lse_fast.adapt.context import make_context
    from lse_fast.adapt.evaluation import evaluate_target
    from lse_fast.adapt.runs import Run
    from lse_fast.evaluate import evaluate
    from lse_fast.evaluate.cli import main as evaluate_cli

    run_dir, metrics, _, cache = variant_run
    assert metrics["rounds"][0]["protocol"]["upsampling"] == "bilinear, align_corners=False"
    cfg = from_dict(Run.load_config(run_dir))
    cfg.progress, cfg.eval_align_corners = False, True
    ctx, model = make_context(cfg)
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "round_1.pt", weights_only=True)["model"])
    got = evaluate_target(ctx, model)
    assert got["protocol"]["align_corners"] is True
    want = evaluate(model, ctx.val_loader, input_size=tuple(cfg.image_size), align_corners=True)
    assert got["per_class_iou"] == pytest.approx(want["iou"], nan_ok=True)
    # python -m lse_fast.evaluate on the run's checkpoint: its config says it was trained at 64x128
    data = ["--data", f"cityscapes:{next(cache.glob('synthetic/*/target'))}", "--loader", "pil",
            "--model", "small_deeplab", "--checkpoint", str(run_dir / "checkpoints" / "round_1.pt")]
    out = evaluate_cli(data)
    assert out["protocol"]["train_size"] == (64, 128) and out["protocol"]["native_size"] == (64, 128)
    assert "input native (auto: native size of the data, 64x128 for the first image) = the model's training size" \
        in capsys.readouterr().out
    evaluate_cli(data + ["--input-size", "32x64"])
    assert "note: input 32x64 (--input-size) differs from the model's training size 64x128" in capsys.readouterr().out


def test_report_of_a_run_without_rounds_has_its_table_and_no_picture(tmp_path, capsys):
    from lse_fast.report import main as report

    per = [0.5] * 19
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(
        {"rounds": [], "source_only": {"miou": 0.5, "per_class_iou": per, "miou19": 0.5}}))
    out = report([str(tmp_path / "run"), "--out", str(tmp_path / "rep")])
    assert [r["name"] for r in out["rows"]] == ["source-only"] and out["rows"][0]["miou19"] == pytest.approx(0.5)
    assert "no picture for" in capsys.readouterr().out
    assert not (tmp_path / "rep" / "examples.png").exists()
    assert "examples.png" not in (tmp_path / "rep" / "report.md").read_text()


def test_oracle_without_target_train_labels_stops_before_anything_is_written(tmp_path, capsys):
    import shutil

    from lse_fast.adapt import cli
    from tests.data_trees import make_cityscapes, make_gta5

    make_gta5(tmp_path / "gta5")
    make_cityscapes(tmp_path / "cs")
    shutil.rmtree(tmp_path / "cs" / "gtFine" / "train")  # the usual target: train images without labels
    run_dir = tmp_path / "run"
    assert cli(["--source", f"gta5:{tmp_path / 'gta5'}", "--target", f"cityscapes:{tmp_path / 'cs'}",
                "--image-size", "64x128", "--source-size", "64x128", "--run-dir", str(run_dir), "--oracle",
                "--cache-dir", str(tmp_path / "cache"), "--loader", "pil", "--no-progress"]) == 2
    assert "--oracle trains on the target train split's labels" in capsys.readouterr().err
    assert not run_dir.exists()
