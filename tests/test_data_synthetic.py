"""The built-in synthetic benchmark and the nearest-resize convention."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lse_fast import data
from lse_fast.data import synthetic
from lse_fast.data._base import crop_nearest, read_label, resize_nearest

SMALL = dict(num_source=4, num_target_train=3, num_target_val=2, size=(64, 128), seed=0)
IDS = {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 26}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, synthetic.generate(out, **SMALL)


def test_layout_and_labels(tree):
    out, paths = tree
    src = data.GTA5(paths["source"])
    tr, va = data.Cityscapes(paths["target"], "train"), data.Cityscapes(paths["target"], "val")
    assert (len(src), len(tr), len(va)) == (4, 3, 2)
    assert tr.has_labels and va.has_labels and tr.label_type == "labelIds"
    seen = set()
    for ds in (src, tr, va):
        for i in range(len(ds)):
            with Image.open(ds.label_path(i)) as im:
                assert im.mode == "L" and im.size == (128, 64)
                seen |= set(np.unique(np.asarray(im)).tolist())
            assert (read_label(ds, i) != 255).all()  # every drawn id maps to a trainId
    assert seen <= IDS and {7, 8, 11, 23, 26} <= seen
    man = json.loads(Path(paths["manifest"]).read_text())
    assert man["version"] == synthetic.VERSION and man["size"] == [64, 128]


def test_reproducible_and_domains_differ(tree, tmp_path):
    out, paths = tree
    again = synthetic.generate(tmp_path, **SMALL)
    for a in sorted(Path(paths["root"]).rglob("*.png")):
        b = Path(again["root"]) / a.relative_to(paths["root"])
        assert a.read_bytes() == b.read_bytes(), a
    # same geometry distribution, different appearance: per-class mean colours differ
    img_s, lab_s = synthetic.render([0, 0, 5], (128, 256), "source")
    img_t, lab_t = synthetic.render([0, 0, 5], (128, 256), "target")
    assert np.array_equal(lab_s, lab_t)  # same seed -> same scene layout
    road = lab_s == 7
    assert np.abs(img_s[road].mean(0) - img_t[road].mean(0)).max() > 10
    assert img_s.std() > 0 and img_t.std() > 0


def test_ensure_reuses_and_regenerates(tmp_path):
    p = synthetic.ensure(tmp_path, **SMALL)
    m = Path(p["manifest"])
    t0 = m.stat().st_mtime_ns
    synthetic.ensure(tmp_path, **SMALL)
    assert m.stat().st_mtime_ns == t0
    synthetic.ensure(tmp_path, **dict(SMALL, num_source=5))
    assert len(data.GTA5(p["source"])) == 5
    with pytest.raises(ValueError, match="num_source"):
        synthetic.generate(tmp_path, num_source=0)
    with pytest.raises(ValueError, match="size"):
        synthetic.generate(tmp_path, size=(8, 8))


def test_cli(tmp_path):
    cmd = [sys.executable, "-m", "lse_fast.data.synthetic", "--out", str(tmp_path), "--num-source", "2",
           "--num-target-train", "1", "--num-target-val", "1", "--size", "32", "64"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["source"] == str(tmp_path / "source")
    assert len(data.Cityscapes(tmp_path / "target", "val")) == 1


@pytest.mark.parametrize("hw,out", [((64, 128), (57, 115)), ((37, 53), (80, 71)), ((64, 128), (32, 64)),
                                    ((50, 90), (33, 149))])
def test_nearest_half_pixel_centres(hw, out):
    from fractions import Fraction
    lab = np.random.default_rng(0).integers(0, 255, hw).astype(np.uint8)
    ys = [int((Fraction(2 * i + 1, 2) * Fraction(hw[0], out[0])).__floor__()) for i in range(out[0])]
    xs = [int((Fraction(2 * i + 1, 2) * Fraction(hw[1], out[1])).__floor__()) for i in range(out[1])]
    assert np.array_equal(resize_nearest(lab, out), lab[np.ix_(ys, xs)])
    want = F.interpolate(torch.from_numpy(lab)[None, None].float(), size=out, mode="nearest-exact")[0, 0]
    # PyTorch's float32 index math differs only at exact ties (128 -> 115: column 57 reads 64 exactly)
    assert (resize_nearest(lab, out) != want.byte().numpy()).mean() < 0.02
    full = resize_nearest(lab, out)
    for anchor, size, flip in [((0, 0), (20, 30), False), ((5, 9), (60, 90), True)]:
        ref = np.full(size, 255, np.uint8)
        part = full[anchor[0]:anchor[0] + size[0], anchor[1]:anchor[1] + size[1]]
        ref[:part.shape[0], :part.shape[1]] = part
        if flip:
            ref = ref[:, ::-1]
        assert np.array_equal(crop_nearest(lab, out, anchor, size, flip), ref)
