"""The Cityscapes-format writer against the official label table and the
official evaluator's file matching rule (both written out here from
cityscapesscripts: helpers/labels.py and
evaluation/evalPixelLevelSemanticLabeling.py, getPrediction), the evaluator's
--export / --predictions round trip, and bad prediction trees."""

import fnmatch
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lse_fast.evaluate.writer import (
    LABEL_ID_TO_TRAIN_ID, TRAIN_ID_TO_LABEL_ID, CityscapesWriter, match_predictions, prediction_path,
    read_prediction,
)

# cityscapesscripts/helpers/labels.py: (name, id, trainId) of every label with an evaluated trainId.
OFFICIAL_EVALUATED = [
    ("road", 7, 0), ("sidewalk", 8, 1), ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4), ("pole", 17, 5),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9), ("sky", 23, 10),
    ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15), ("train", 31, 16),
    ("motorcycle", 32, 17), ("bicycle", 33, 18),
]
# ids whose trainId is 255 or -1 (ignoreInEval): unlabeled ... license plate
OFFICIAL_IGNORED_IDS = [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30]


def official_prediction_for(gt_file, result_root):
    """getPrediction of evalPixelLevelSemanticLabeling: for
    <city>_<seq>_<frame>_gtFine_labelIds.png, the one file under the walked
    result root matching '<city>_<seq>_<frame>*.png' (several: an error)."""
    city, seq, frame = os.path.basename(gt_file).split("_")[:3]
    pattern = f"{city}_{seq}_{frame}*.png"
    found = []
    for root, _, files in os.walk(result_root):
        found += [os.path.join(root, f) for f in fnmatch.filter(files, pattern)]
    if len(found) != 1:
        raise AssertionError(f"{'multiple' if found else 'no'} predictions for ground truth {gt_file}: {found}")
    return found[0]


def test_label_table_is_the_official_one():
    for name, label_id, train_id in OFFICIAL_EVALUATED:
        assert TRAIN_ID_TO_LABEL_ID[train_id] == label_id, name
        assert LABEL_ID_TO_TRAIN_ID[label_id] == train_id, name
    assert TRAIN_ID_TO_LABEL_ID[255] == 0  # ignore -> 'unlabeled', which the evaluator leaves out
    for label_id in OFFICIAL_IGNORED_IDS:
        assert LABEL_ID_TO_TRAIN_ID[label_id] == 255


def _image_paths(root, names):
    return [str(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png") for city, stem in names]


def test_writer_layout_matches_the_official_rule(tmp_path):
    names = [("frankfurt", "frankfurt_000000_000294"), ("frankfurt", "frankfurt_000000_000576"),
             ("lindau", "lindau_000001_000019")]
    paths = _image_paths(tmp_path / "cs", names)
    g = torch.Generator().manual_seed(0)
    maps = [torch.randint(0, 19, (6, 10), generator=g) for _ in names]
    maps[0][0, :3] = 255
    out = tmp_path / "export"
    writer = CityscapesWriter(out, formats=("labelIds", "color", "trainIds"))
    for p, m in zip(paths, maps):
        writer.write(p, m)
    assert writer.written == 3
    for (city, stem), m in zip(names, maps):
        gt = f"/data/gtFine/val/{city}/{stem}_gtFine_labelIds.png"
        # pointed at labelIds/, the official rule finds exactly our file ...
        found = official_prediction_for(gt, out / "labelIds")
        assert found == str(out / "labelIds" / city / f"{stem}_leftImg8bit.png")
        ids = np.asarray(Image.open(found))
        assert ids.dtype == np.uint8 and ids.ndim == 2  # 8-bit, one channel: what the evaluator requires
        assert np.array_equal(ids, TRAIN_ID_TO_LABEL_ID[m.numpy().astype(np.uint8)])
        assert np.array_equal(np.asarray(Image.open(out / "trainIds" / city / f"{stem}_leftImg8bit.png")),
                              m.numpy().astype(np.uint8))
        assert np.asarray(Image.open(out / "color" / city / f"{stem}_leftImg8bit.png")).shape == (6, 10, 3)
        # ... and at the export root it would see three files for one image
        with pytest.raises(AssertionError, match="multiple"):
            official_prediction_for(gt, out)
    assert np.asarray(Image.open(out / "labelIds" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png"))[0, 0] == 0


def test_sixteen_class_head_written_as_cityscapes_ids(tmp_path):
    from lse_fast.data import SYNTHIA16_TRAIN_IDS

    path = _image_paths(tmp_path, [("x", "x_000000_000000")])[0]
    CityscapesWriter(tmp_path / "o", num_classes=16, formats=("labelIds",)).write(path, torch.arange(16).view(2, 8))
    got = np.asarray(Image.open(tmp_path / "o" / prediction_path(path)))
    assert got.ravel().tolist() == [int(TRAIN_ID_TO_LABEL_ID[t]) for t in SYNTHIA16_TRAIN_IDS]


def test_nothing_is_overwritten_without_overwrite(tmp_path):
    path = _image_paths(tmp_path, [("x", "x_000000_000000")])[0]
    CityscapesWriter(tmp_path / "o").write(path, torch.zeros(2, 2, dtype=torch.long))
    target = tmp_path / "o" / "labelIds" / "x" / "x_000000_000000_leftImg8bit.png"
    with pytest.raises(FileExistsError, match=r"already holds .*x_000000_000000_leftImg8bit.png.*--overwrite"):
        CityscapesWriter(tmp_path / "o")
    assert np.asarray(Image.open(target)).max() == 7  # untouched (trainId 0 = road = id 7)
    stale = tmp_path / "o" / "labelIds" / "x" / "x_000000_000001_leftImg8bit.png"
    stale.write_bytes(target.read_bytes())
    w = CityscapesWriter(tmp_path / "o", overwrite=True)  # the tree then holds this export only
    assert not stale.exists() and not target.exists()
    w.write(path, torch.ones(2, 2, dtype=torch.long))
    assert np.asarray(Image.open(target)).max() == 8
    twin = str(tmp_path / "elsewhere" / "x" / "x_000000_000000_leftImg8bit.png")  # same city folder and name
    with pytest.raises(ValueError, match="would both be written as"):
        w.write(twin, torch.zeros(2, 2, dtype=torch.long))
    assert np.asarray(Image.open(target)).max() == 8


def test_bad_prediction_trees_name_the_file(tmp_path):
    paths = _image_paths(tmp_path, [("a", "a_000000_000001"), ("a", "a_000000_000002")])
    d = tmp_path / "pred"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        match_predictions(d, paths)
    (d / "a").mkdir(parents=True)
    one = np.full((4, 6), 7, np.uint8)
    Image.fromarray(one).save(d / "a" / "a_000000_000001_leftImg8bit.png")
    with pytest.raises(ValueError, match=r"no prediction for image .*a_000000_000002_leftImg8bit.png"):
        match_predictions(d, paths)
    Image.fromarray(one).save(d / "a" / "a_000000_000002_whatever.png")
    assert [Path(p).name for p in match_predictions(d, paths)] == ["a_000000_000001_leftImg8bit.png",
                                                                   "a_000000_000002_whatever.png"]
    Image.fromarray(one).save(d / "b_000000_000003_leftImg8bit.png")
    with pytest.raises(ValueError, match=r"b_000000_000003_leftImg8bit.png' matches no image"):
        match_predictions(d, paths)
    (d / "b_000000_000003_leftImg8bit.png").unlink()
    Image.fromarray(one).save(d / "a_000000_000001_color.png")
    with pytest.raises(ValueError, match=r"two predictions for image .*a_000000_000001_color.png"):
        match_predictions(d, paths)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(d / "a_000000_000001_color.png")
    with pytest.raises(ValueError, match=r"a_000000_000001_color.png' has 3 channels"):
        read_prediction(d / "a_000000_000001_color.png")


def _cityscapes_tree(root, rows):
    """A 2-image val tree (4x8, labelIds) with the labels written by hand."""
    for stem, row in rows.items():
        d = root / "leftImg8bit" / "val" / "x"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 8, 3), 128, np.uint8)).save(d / f"{stem}_leftImg8bit.png")
        g = root / "gtFine" / "val" / "x"
        g.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.array([row] * 4, np.uint8), mode="L").save(g / f"{stem}_gtFine_labelIds.png")


def test_evaluator_export_reads_back_to_the_same_scores(tmp_path, capsys):
    from lse_fast.evaluate.cli import cli, main
    from tests.test_evaluate import half_split_checkpoint

    # label ids: 7 road, 8 sidewalk, 11 building, 0 unlabeled
    _cityscapes_tree(tmp_path / "cs", {"x_000000_000001": [7, 7, 7, 8, 8, 8, 8, 8],
                                       "x_000000_000002": [11, 11, 11, 11, 11, 11, 0, 8]})
    ckpt = half_split_checkpoint(tmp_path / "half.pth")
    common = ["--data", f"cityscapes:{tmp_path / 'cs'}", "--loader", "pil", "--device", "cpu"]
    model_args = ["--model", "tests.test_evaluate:half_split", "--checkpoint", str(ckpt)] + common
    out = main(model_args + ["--export", str(tmp_path / "exp"), "--export-train-ids", "--json",
                             str(tmp_path / "r.json")])
    assert out["protocol"]["input_size"] is None and "native size of the data" in out["protocol"]["input_size_rule"]
    assert out["protocol"]["align_corners"] is False
    text = capsys.readouterr().out
    assert "training size is unknown" in text and "CITYSCAPES_RESULTS=" in text
    for sub in ("labelIds", "color", "trainIds"):
        assert sorted(p.name for p in (tmp_path / "exp" / sub / "x").iterdir()) == [
            "x_000000_000001_leftImg8bit.png", "x_000000_000002_leftImg8bit.png"]
    back = main(["--predictions", str(tmp_path / "exp" / "labelIds")] + common)
    assert back["confusion"] == out["confusion"] and back["miou"] == pytest.approx(out["miou"])
    tid = main(["--predictions", str(tmp_path / "exp" / "trainIds"), "--prediction-encoding", "trainIds"] + common)
    assert tid["confusion"] == out["confusion"]
    # the same export again: refused, nothing replaced; the JSON too
    before = (tmp_path / "exp" / "labelIds" / "x" / "x_000000_000001_leftImg8bit.png").stat().st_mtime_ns
    assert cli(model_args + ["--export", str(tmp_path / "exp")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli(model_args + ["--json", str(tmp_path / "r.json")]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "exp" / "labelIds" / "x" / "x_000000_000001_leftImg8bit.png").stat().st_mtime_ns == before
    assert cli(model_args + ["--export", str(tmp_path / "exp"), "--overwrite"]) == 0
    # the whole tree given (three formats): each image has three candidate files
    assert cli(["--predictions", str(tmp_path / "exp")] + common) == 2
    assert "two predictions for image" in capsys.readouterr().err
    # a wrong-size prediction names the file and both sizes
    bad = tmp_path / "exp" / "labelIds" / "x" / "x_000000_000002_leftImg8bit.png"
    Image.fromarray(np.zeros((4, 7), np.uint8)).save(bad)
    assert cli(["--predictions", str(tmp_path / "exp" / "labelIds")] + common) == 2
    assert f"{bad}' is 4x7 (HxW); its label is 4x8" in capsys.readouterr().err
    # trainIds read as label ids: the scores collapse, and a warning says why
    with pytest.warns(RuntimeWarning, match="trainId map"):
        wrong = main(["--predictions", str(tmp_path / "exp" / "trainIds")] + common)
    # (here every pixel reads as a void id: no class has a hit, a miss or a false alarm, so no IoU exists)
    assert all(v != v for v in wrong["per_class_iou"].values()) and wrong["miou"] != wrong["miou"]


def test_void_predictions_count_for_no_class_as_the_official_evaluator(tmp_path):
    from lse_fast.evaluate.cli import main

    _cityscapes_tree(tmp_path / "cs", {"x_000000_000001": [7, 7, 7, 7, 8, 8, 8, 8]})
    pred = np.array([[7, 7, 0, 0, 8, 8, 7, 7]] * 4, np.uint8)  # 0: 'unlabeled' predicted on road
    (tmp_path / "p").mkdir()
    Image.fromarray(pred).save(tmp_path / "p" / "x_000000_000001_leftImg8bit.png")
    res = main(["--predictions", str(tmp_path / "p"), "--data", f"cityscapes:{tmp_path / 'cs'}"])
    # official getIouScoreForLabel: fn counts predictions of evaluated labels only, so road's two void columns
    # are neither tp nor fn: road IoU = 8 / (8 + 8 fp), sidewalk 8 / (8 + 8 fn)
    assert res["per_class_iou"]["road"] == pytest.approx(0.5)
    assert res["per_class_iou"]["sidewalk"] == pytest.approx(0.5)
    assert json.dumps(res["protocol"]).count("official") == 1


def test_align_corners_changes_the_upsampling_and_is_recorded():
    from lse_fast.evaluate import evaluate, predict

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 5, 4, 6, generator=g)
    a = predict(logits, (16, 24), align_corners=True)
    want = torch.nn.functional.interpolate(logits, size=(16, 24), mode="bilinear", align_corners=True).argmax(1)
    assert torch.equal(a, want) and not torch.equal(a, predict(logits, (16, 24)))

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return logits.expand(x.shape[0], -1, -1, -1) + 0 * x.mean()

    label = torch.randint(0, 5, (1, 16, 24), generator=g)
    seen = []
    res = evaluate(Fixed(), [{"image": torch.zeros(1, 3, 16, 24), "label": label}], num_classes=5,
                   align_corners=True, on_prediction=lambda batch, pred: seen.append(pred.clone()))
    assert torch.equal(seen[0], want)  # on_prediction gets the maps that are scored
    assert int(res["confusion"].diagonal().sum()) == int((want == label).sum())
