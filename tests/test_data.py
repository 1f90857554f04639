"""Datasets, label mapping, the DALI loader against the PIL oracle, errors."""

import sys
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lse_fast import data
from lse_fast.data import pil
from lse_fast.data._base import read_label
from tests.data_trees import colour_of, make_cityscapes, make_gta5, make_synthia

pytest.importorskip("nvidia.dali")


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("trees")
    return dict(
        root=root,
        cs=make_cityscapes(root / "cs"),
        cs_tid=make_cityscapes(root / "cs_tid", label_type="labelTrainIds", n_train=3, n_val=1),
        gta=make_gta5(root / "gta"),
        syn=make_synthia(root / "syn"),
    )


# -- datasets ---------------------------------------------------------------

def test_exact_labels_after_mapping(trees):
    r = trees["root"]
    cases = [(data.Cityscapes(r / "cs", "train"), {k[1]: v for k, v in trees["cs"].items() if k[0] == "train"}),
             (data.Cityscapes(r / "cs", "val"), {k[1]: v for k, v in trees["cs"].items() if k[0] == "val"}),
             (data.Cityscapes(r / "cs_tid", "train"), {k[1]: v for k, v in trees["cs_tid"].items() if k[0] == "train"}),
             (data.GTA5(r / "gta"), trees["gta"]),
             (data.SYNTHIA(r / "syn"), trees["syn"])]
    for ds, truth in cases:
        assert len(ds) == len(truth) and ds.has_labels
        for i in range(len(ds)):
            np.testing.assert_array_equal(read_label(ds, i), truth[ds.image_path(i)], err_msg=ds.label_path(i))
    assert data.Cityscapes(r / "cs_tid", "train").label_type == "labelTrainIds"
    assert data.Cityscapes(r / "cs", "train").label_type == "labelIds"


def test_pairing_order_and_classes(trees):
    r = trees["root"]
    cs = data.Cityscapes(r / "cs", "train")
    paths = [cs.image_path(i) for i in range(len(cs))]
    assert paths == sorted(paths)
    for i in range(len(cs)):
        assert Path(cs.label_path(i)).name == Path(cs.image_path(i)).name.replace("leftImg8bit", "gtFine_labelIds")
    gta = data.GTA5(r / "gta")
    assert [Path(gta.image_path(i)).name for i in range(len(gta))] == [f"{i:05d}.png" for i in range(1, 7)]
    assert gta.classes == list(range(19)) and len(gta.class_names) == 19 and gta.num_classes == 19
    syn = data.SYNTHIA(r / "syn")
    assert len(syn.classes) == 16 and not {9, 14, 16} & set(syn.classes)
    assert isinstance(data.from_spec(f"synthia:{r / 'syn'}"), data.SYNTHIA)
    assert len(data.from_spec(f"cityscapes:{r / 'cs'}", "val")) == 3
    assert isinstance(data.from_spec(f"folder:{r / 'gta'}"), data.ImageFolderPairs)


def test_list_files(trees, tmp_path):
    r = trees["root"]
    lst = tmp_path / "train.txt"
    lst.write_text("00003.png\n00001.png\n\n")
    gta = data.GTA5(r / "gta", list_file=lst)
    assert [Path(gta.image_path(i)).name for i in range(len(gta))] == ["00001.png", "00003.png"]
    lst.write_text("bonn/bonn_000001_000019_leftImg8bit.png\n")
    assert len(data.Cityscapes(r / "cs", "train", list_file=lst)) == 1
    lst.write_text("99999.png\n")
    with pytest.raises(FileNotFoundError, match="99999.png"):
        data.GTA5(r / "gta", list_file=lst)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data.GTA5(r / "gta", list_file=tmp_path / "nope.txt")


def test_target_without_labels(tmp_path):
    make_cityscapes(tmp_path, n_train=2, n_val=1, labels=False)
    ds = data.Cityscapes(tmp_path, "train")
    assert not ds.has_labels and ds.label_path(0) is None
    b = next(iter(data.loader(ds, batch_size=2)))
    assert set(b) == {"image", "index"}
    with pytest.raises(FileNotFoundError, match="gtFine"):
        data.Cityscapes(tmp_path, "train", require_labels=True)


def test_dataset_errors(trees, tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        data.GTA5(tmp_path / "does-not-exist")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "labels").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images found"):
        data.GTA5(tmp_path / "empty")
    (tmp_path / "empty" / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        data.Cityscapes(tmp_path / "empty")
    make_gta5(tmp_path / "g", n=3)
    (tmp_path / "g" / "labels" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"00002.png.*has no label"):
        data.GTA5(tmp_path / "g")
    with pytest.raises(ValueError, match="unknown dataset kind 'kitti'"):
        data.from_spec("kitti:/x")
    with pytest.raises(ValueError, match="KIND:PATH"):
        data.from_spec("/x")


def test_label_size_mismatch_and_bad_file(tmp_path):
    make_gta5(tmp_path / "g", n=3)
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(tmp_path / "g" / "labels" / "00002.png")
    ds = data.GTA5(tmp_path / "g")
    for make in (data.loader, pil.loader):
        with pytest.raises(RuntimeError, match=r"labels/00002.png' is 10x10 but its image .*00002.png' is 64x128"):
            list(make(ds, batch_size=1))
    make_gta5(tmp_path / "h", n=3)
    (tmp_path / "h" / "images" / "00003.png").write_bytes(b"not a png at all")
    ds = data.GTA5(tmp_path / "h")
    for make in (data.loader, pil.loader):
        with pytest.raises(RuntimeError, match=r"cannot decode image file .*00003.png"):
            list(make(ds, batch_size=2))
    # a file with a valid header but truncated data fails inside DALI: still named
    make_gta5(tmp_path / "t", n=2)
    p = tmp_path / "t" / "images" / "00002.png"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(RuntimeError, match=r"cannot decode image file .*00002.png"):
        list(data.loader(data.GTA5(tmp_path / "t"), batch_size=2))


def test_loader_argument_errors(trees):
    ds = data.GTA5(trees["root"] / "gta")
    bad = [dict(batch_size=0), dict(batch_size=2, size=(0, 5)), dict(batch_size=2, train=True),
           dict(batch_size=2, shard_id=2, num_shards=2), dict(batch_size=2, normalization="tf"),
           dict(batch_size=2, device="tpu"), dict(batch_size=2, seed=-1), dict(batch_size=7, size=8, train=True)]
    for kw in bad:
        with pytest.raises(ValueError, match=r"lse_fast.data.loader: .*`"):
            data.loader(ds, **kw)


def test_native_size_mismatch(tmp_path):
    make_gta5(tmp_path / "g", n=2)
    make_gta5(tmp_path / "o", n=1, h=32, w=48)
    (tmp_path / "o" / "images" / "00001.png").rename(tmp_path / "g" / "images" / "00003.png")
    (tmp_path / "o" / "labels" / "00001.png").rename(tmp_path / "g" / "labels" / "00003.png")
    ds = data.GTA5(tmp_path / "g")
    with pytest.raises(RuntimeError, match="images of one batch differ"):
        list(data.loader(ds, batch_size=3))
    assert len(list(data.loader(ds, batch_size=1))) == 3
    b = list(data.loader(ds, batch_size=3, size=(40, 60)))[0]
    assert b["image"].shape == (3, 3, 40, 60)


# -- DALI against the PIL oracle ---------------------------------------------

MODES = [dict(), dict(size=(48, 100)), dict(size=(96, 160)), dict(size=(40, 72), train=True, shuffle=True, seed=3),
         dict(size=(80, 200), train=True, seed=5, scale_range=(0.6, 1.4)), dict(normalization="caffe", size=(32, 64))]


@pytest.mark.parametrize("kind", ["cs", "gta", "syn"])
@pytest.mark.parametrize("mode", range(len(MODES)))
def test_dali_matches_pil(trees, kind, mode):
    r = trees["root"]
    ds = {"cs": lambda: data.Cityscapes(r / "cs"), "gta": lambda: data.GTA5(r / "gta"),
          "syn": lambda: data.SYNTHIA(r / "syn")}[kind]()
    kw = dict(batch_size=2, **MODES[mode])
    a, b = data.loader(ds, **kw), pil.loader(ds, **kw)
    assert len(a) == len(b)
    for epoch in range(2):
        got, want = list(a), list(b)
        assert len(got) == len(a)
        for x, y in zip(got, want):
            assert x["image"].dtype == torch.float32 and x["label"].dtype == torch.int64
            assert torch.equal(x["index"], y["index"])
            assert torch.equal(x["label"], y["label"]), f"labels differ (epoch {epoch})"
            err = (x["image"] - y["image"]).abs().max().item()
            assert err < 2e-3, f"image max |diff| {err}"


def test_denormalize_round_trip(trees):
    ds = data.GTA5(trees["root"] / "gta")
    for norm in ("imagenet", "caffe"):
        b = next(iter(data.loader(ds, batch_size=2, normalization=norm)))
        rgb = data.denormalize(b["image"], norm)
        for k, i in enumerate(b["index"].tolist()):
            assert torch.equal(rgb[k], torch.from_numpy(np.array(Image.open(ds.image_path(i)).convert("RGB"))))


def test_augmentation_keeps_image_and_label_aligned(tmp_path):
    """Image pixels are the colour of their label: after random scale, crop
    and flip, every pixel away from label edges must still have the colour
    of the label it is given."""
    make_gta5(tmp_path / "g", n=6, h=96, w=160)
    ds = data.GTA5(tmp_path / "g")
    for i in range(len(ds)):  # exact label colours, no noise
        Image.fromarray(colour_of(read_label(ds, i))).save(ds.image_path(i))
    ld = data.loader(ds, batch_size=3, size=(64, 96), train=True, shuffle=True, seed=11, scale_range=(0.7, 1.6))
    flips = 0
    for _ in range(3):
        for b in ld:
            rgb = data.denormalize(b["image"]).long()
            lab = b["label"]
            pal = torch.from_numpy(colour_of(np.arange(256, dtype=np.uint8)).astype(np.int64))
            want = pal[lab]
            pad = lab == 255
            interior = torch.ones_like(lab, dtype=torch.bool)
            for dy in (-2, 0, 2):  # pixels whose 5x5 neighbourhood has one label
                for dx in (-2, 0, 2):
                    interior &= torch.roll(lab, (dy, dx), (1, 2)) == lab
            interior[:, :2] = interior[:, -2:] = False
            interior[:, :, :2] = interior[:, :, -2:] = False
            diff = (rgb - want).abs().amax(-1)
            assert interior.sum() > 1000
            assert int(diff[interior & ~pad].max()) <= 1
            # did a flip happen? compare with the unflipped oracle params
            for k, i in enumerate(b["index"].tolist()):
                flips += ld.aug(ld.epoch - 1, i, (96, 160)).flip
    assert flips > 0


def test_shuffle_determinism_and_epochs(trees):
    ds = data.Cityscapes(trees["root"] / "cs")
    idx = lambda ld: [b["index"].tolist() for b in ld]  # noqa: E731
    a = data.loader(ds, batch_size=2, shuffle=True, seed=7)
    b = data.loader(ds, batch_size=2, shuffle=True, seed=7)
    e0, e1 = idx(a), idx(a)
    assert e0 == idx(b) and e1 == idx(b)
    assert sorted(sum(e0, [])) == list(range(5)) and sorted(sum(e1, [])) == list(range(5))
    assert e0 != e1 or e0 != idx(a)  # new permutation per epoch
    assert idx(data.loader(ds, batch_size=2)) == [[0, 1], [2, 3], [4]]
    a.set_epoch(0)
    assert idx(a) == e0
    assert len(data.loader(ds, batch_size=2)) == 3
    t = data.loader(ds, batch_size=2, size=(32, 64), train=True)
    assert len(t) == 2 and all(len(b["index"]) == 2 for b in t)


@pytest.mark.parametrize("shuffle", [False, True])
def test_sharding_covers_every_index_once(trees, shuffle):
    ds = data.GTA5(trees["root"] / "gta")
    for num_shards in (1, 2, 4):
        seen = []
        for s in range(num_shards):
            ld = data.loader(ds, batch_size=2, shuffle=shuffle, seed=1, shard_id=s, num_shards=num_shards)
            got = [i for b in ld for i in b["index"].tolist()]
            assert len(got) == sum(len(b) for b in ld.batches(0))
            seen += got
        assert sorted(seen) == list(range(len(ds)))


def test_dali_not_imported_by_package():
    code = "import sys, lse_fast, lse_fast.data; print('nvidia.dali' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "False", out.stderr


def test_label_size_mismatch_resize_or_skip(tmp_path):
    truth = make_gta5(tmp_path / "g", n=3)
    small = np.asarray(Image.open(tmp_path / "g" / "labels" / "00002.png"))[::2, ::2]  # 32x64 of a 64x128 image
    Image.fromarray(small, mode="L").save(tmp_path / "g" / "labels" / "00002.png")
    ds = data.GTA5(tmp_path / "g", label_size_mismatch="resize")
    for make in (data.loader, pil.loader):
        with pytest.warns(RuntimeWarning, match=r"labels/00002.png' is 32x64 but its image is 64x128; resized"):
            batches = list(make(ds, batch_size=1))
        # nearest x2 upsampling of the halved label: every pixel reads its block's top-left source
        got = batches[1]["label"][0].numpy()
        want = truth[str(tmp_path / "g" / "images" / "00002.png")][::2, ::2].repeat(2, 0).repeat(2, 1)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(batches[0]["label"][0].numpy(), truth[ds.image_path(0)])
    with pytest.warns(RuntimeWarning, match=r"skipped 1 of 3 pairs .*00002.png \(image 64x128, label 32x64\)"):
        skip = data.from_spec(f"gta5:{tmp_path / 'g'}", label_size_mismatch="skip")
    assert len(skip) == 2 and skip.skipped == [str(tmp_path / "g" / "images" / "00002.png")]
    assert [b["label"].shape[-2:] for b in data.loader(skip, batch_size=1)] == [torch.Size([64, 128])] * 2
    with pytest.raises(ValueError, match="`label_size_mismatch` must be one of"):
        data.GTA5(tmp_path / "g", label_size_mismatch="crop")
