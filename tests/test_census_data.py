"""Census of bad inputs for DATA and CHECKPOINTS (issue 15, item 1): one
table, one case per row, each asserting that the user meets a clear error
naming the file, directory or argument and saying what was expected (or the
documented graceful handling). docs/reliability.md "Data and checkpoints"
lists the same rows.

Each case builds a tiny tree (a few 8x16 images) and makes the call a user
makes: a dataset constructor, the first batch of `lse_fast.data.loader` (the
DALI loader; decode errors must name the file, not end in a DALI stack
trace), or `lse_fast.models.load_checkpoint`.
"""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lse_fast import data, models

H, W = 8, 16


# --------------------------------------------------------------------------- trees
def _png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)
    return path


def _image(i=0):
    return np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _label():
    lab = np.full((H, W), 7, np.uint8)  # Cityscapes id 7 = road
    lab[H // 2:] = 26  # car
    return lab


def gta5(tmp, n=2, ext=".png"):
    root = tmp / "gta5"
    for i in range(n):
        img = root / "images" / f"{i + 1:05d}{ext}"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(i)).save(img, quality=90) if ext == ".jpg" else _png(img, _image(i))
        _png(root / "labels" / f"{i + 1:05d}.png", _label(), "L")
    return root


def cityscapes(tmp, split="val", n=2, labels=True):
    root = tmp / "cityscapes"
    for i in range(n):
        stem = f"aachen_{i:06d}_000019"
        _png(root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", _image(i))
        if labels:
            _png(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png", _label(), "L")
    return root


def first_batch(dataset):
    pytest.importorskip("nvidia.dali")  # the loader users meet is the DALI one
    return next(iter(data.loader(dataset, batch_size=len(dataset), num_threads=1)))


def truncate(path, keep=0.5):
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[: int(len(raw) * keep)])


# --------------------------------------------------------------------------- data cases
def missing_root(tmp):
    return lambda: data.GTA5(tmp / "nowhere"), [str(tmp / "nowhere"), "does not exist or is not a directory"]


def root_is_a_file(tmp):
    f = tmp / "gta5.zip"
    f.write_bytes(b"PK")
    return lambda: data.GTA5(f), [str(f), "is not a directory"]


def missing_image_folder(tmp):
    root = gta5(tmp)
    shutil.rmtree(root / "images")
    return lambda: data.GTA5(root), [str(root / "images"), "image directory", "does not exist"]


def missing_label_folder(tmp):
    root = gta5(tmp)
    shutil.rmtree(root / "labels")
    return lambda: data.GTA5(root), [str(root / "labels"), "label directory", "does not exist"]


def missing_split(tmp):
    root = cityscapes(tmp, "val")
    return lambda: data.Cityscapes(root, "vall"), [str(root / "leftImg8bit" / "vall"), "does not exist",
                                                    "available splits: val"]


def missing_label_split_required(tmp):
    root = cityscapes(tmp, "val", labels=False)
    return (lambda: data.Cityscapes(root, "val", require_labels=True),
            [str(root / "gtFine" / "val"), "label directory", "does not exist"])


def empty_split(tmp):
    root = cityscapes(tmp, "val")
    (root / "leftImg8bit" / "train").mkdir()
    return lambda: data.Cityscapes(root, "train"), [str(root / "leftImg8bit" / "train"), "no images",
                                                     "_leftImg8bit.png"]


def empty_image_folder(tmp):
    root = gta5(tmp)
    for p in (root / "images").iterdir():
        p.unlink()
    (root / "images" / "notes.txt").write_text("not an image")
    return lambda: data.GTA5(root), [str(root / "images"), "no images found", ".png"]


def image_without_label(tmp):
    root = gta5(tmp)
    (root / "labels" / "00002.png").unlink()
    return lambda: data.GTA5(root), [str(root / "images" / "00002.png"), "has no label",
                                     str(root / "labels" / "00002.png")]


def image_without_label_cityscapes(tmp):
    root = cityscapes(tmp)
    lab = root / "gtFine" / "val" / "aachen" / "aachen_000001_000019_gtFine_labelIds.png"
    lab.unlink()
    return lambda: data.Cityscapes(root, "val"), ["aachen_000001_000019_leftImg8bit.png", "has no label", str(lab)]


def label_without_image(tmp):
    root = gta5(tmp)
    (root / "images" / "00002.png").unlink()
    return lambda: data.GTA5(root), [str(root / "labels" / "00002.png"), "has no image",
                                     str(root / "images" / "00002"), "list_file"]


def label_without_image_cityscapes(tmp):
    root = cityscapes(tmp)
    img = root / "leftImg8bit" / "val" / "aachen" / "aachen_000001_000019_leftImg8bit.png"
    img.unlink()
    return lambda: data.Cityscapes(root, "val"), ["aachen_000001_000019_gtFine_labelIds.png", "has no image",
                                                   str(img)]


def list_file_missing(tmp):
    root = gta5(tmp)
    return (lambda: data.GTA5(root, list_file=tmp / "train.txt"),
            [str(tmp / "train.txt"), "list file", "does not exist"])


def list_file_names_missing_file(tmp):
    root = gta5(tmp)
    lst = tmp / "train.txt"
    lst.write_text("00001.png\n00009.png\n")
    return (lambda: data.GTA5(root, list_file=lst),
            [str(lst), "'00009.png'", "not an image under", str(root / "images")])


def list_file_empty(tmp):
    root = gta5(tmp)
    lst = tmp / "train.txt"
    lst.write_text("# nothing\n\n")
    return lambda: data.GTA5(root, list_file=lst), [str(lst), "names no files"]


def unknown_dataset_kind(tmp):
    root = gta5(tmp)
    return (lambda: data.from_spec(f"gta:{root}"),
            ["unknown dataset kind 'gta'", "expected one of cityscapes, gta5, synthia, folder"])


def corrupt_png_image(tmp):
    root = gta5(tmp)
    bad = root / "images" / "00002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return lambda: first_batch(data.GTA5(root)), [str(bad), "cannot decode image file"]


def truncated_png_image(tmp):
    root = gta5(tmp)
    bad = root / "images" / "00001.png"
    truncate(bad)
    return lambda: first_batch(data.GTA5(root)), [str(bad), "cannot decode image file"]


def corrupt_jpeg_image(tmp):
    root = gta5(tmp, ext=".jpg")
    bad = root / "images" / "00002.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 20)
    return lambda: first_batch(data.GTA5(root)), [str(bad), "cannot decode image file"]


def truncated_jpeg_image(tmp):
    root = gta5(tmp, ext=".jpg")
    bad = root / "images" / "00001.jpg"
    truncate(bad, 0.6)
    return lambda: first_batch(data.GTA5(root)), [str(bad), "cannot decode image file"]


def text_file_named_png(tmp):
    root = gta5(tmp)
    bad = root / "images" / "00001.png"
    bad.write_text("this is not an image")
    return lambda: first_batch(data.GTA5(root)), [str(bad), "cannot decode image file"]


def corrupt_label_png(tmp):
    root = gta5(tmp)
    bad = root / "labels" / "00002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return lambda: first_batch(data.GTA5(root)), [str(bad), "cannot decode label file"]


def truncated_label_png(tmp):
    root = gta5(tmp)
    bad = root / "labels" / "00001.png"
    truncate(bad)
    return lambda: first_batch(data.GTA5(root)), [str(bad), "cannot decode label file"]


def rgb_label(tmp):
    root = gta5(tmp)
    bad = _png(root / "labels" / "00001.png", np.repeat(_label()[..., None], 3, -1))  # e.g. a *_color.png
    return lambda: first_batch(data.GTA5(root)), [str(bad), "RGB", "single-channel"]


def rgba_label(tmp):
    root = gta5(tmp)
    bad = _png(root / "labels" / "00001.png", np.repeat(_label()[..., None], 4, -1), "RGBA")
    return lambda: first_batch(data.GTA5(root)), [str(bad), "RGBA", "single-channel"]


def one_bit_label(tmp):
    root = gta5(tmp)
    bad = root / "labels" / "00001.png"
    Image.fromarray(_label() > 10).save(bad)  # mode "1": every id would become 0 or 1
    return lambda: first_batch(data.GTA5(root)), [str(bad), "1-bit", "8- or 16-bit"]


def label_of_another_size(tmp):
    root = gta5(tmp)
    bad = _png(root / "labels" / "00001.png", np.full((H * 2, W), 7, np.uint8), "L")
    return lambda: first_batch(data.GTA5(root)), [str(bad), f"is {2 * H}x{W}", f"is {H}x{W}"]


def native_sizes_differ_in_a_batch(tmp):
    root = gta5(tmp)
    _png(root / "images" / "00002.png", np.zeros((H, W * 2, 3), np.uint8))
    _png(root / "labels" / "00002.png", np.full((H, W * 2), 7, np.uint8), "L")
    return lambda: first_batch(data.GTA5(root)), [str(root / "images" / "00002.png"), "size=None",
                                                 "pass size=(H, W) or batch_size=1"]


def train_without_size(tmp):
    root = gta5(tmp)
    return (lambda: data.loader(data.GTA5(root), batch_size=1, train=True),
            ["train=True needs `size`"])


def batch_larger_than_split(tmp):
    root = gta5(tmp)
    return (lambda: data.loader(data.GTA5(root), batch_size=4, size=(H, W), train=True),
            ["has 2 images", "fewer than `batch_size`=4"])


# --------------------------------------------------------------------------- checkpoint cases
def _model():
    torch.manual_seed(0)
    return models.build("small_deeplab", num_classes=19)


def checkpoint_missing(tmp):
    return lambda: models.load_checkpoint(_model(), tmp / "model.pth"), [str(tmp / "model.pth"), "not found"]


def checkpoint_is_a_directory(tmp):
    (tmp / "ckpt").mkdir()
    return lambda: models.load_checkpoint(_model(), tmp / "ckpt"), [str(tmp / "ckpt"), "is a directory",
                                                                   "checkpoint file"]


def checkpoint_truncated(tmp):
    path = tmp / "model.pth"
    torch.save(_model().state_dict(), path)
    truncate(path)
    return lambda: models.load_checkpoint(_model(), path), [str(path), "cannot read", "PyTorch state dict"]


def checkpoint_empty_file(tmp):
    path = tmp / "model.pth"
    path.write_bytes(b"")
    return lambda: models.load_checkpoint(_model(), path), [str(path), "empty file", "PyTorch state dict"]


def checkpoint_not_a_checkpoint(tmp):
    path = tmp / "model.pth"
    _png(tmp / "photo.png", _image()).rename(path)
    return lambda: models.load_checkpoint(_model(), path), [str(path), "cannot read", "PyTorch state dict"]


def checkpoint_without_tensors(tmp):
    path = tmp / "model.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    return lambda: models.load_checkpoint(_model(), path), [str(path), "is not a state dict", "a dict of tensors"]


def checkpoint_with_pickled_objects(tmp):
    path = tmp / "model.pth"
    torch.save({"state_dict": _model().state_dict(), "args": Path("/x")}, path)  # weights_only refuses it
    return lambda: models.load_checkpoint(_model(), path), [str(path), "weights_only=True",
                                                            "torch.load(path, weights_only=False)"]


def checkpoint_of_another_network(tmp):
    path = tmp / "model.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    return lambda: models.load_checkpoint(_model(), path), [str(path), "shares no tensor with SmallDeepLab",
                                                            "features.0.weight"]


def checkpoint_wrong_class_count_strict(tmp):
    path = tmp / "model.pth"
    torch.manual_seed(0)
    torch.save(models.build("small_deeplab", num_classes=16).state_dict(), path)
    return (lambda: models.load_checkpoint(_model(), path, strict=True),
            [str(path), "strict=True", "checkpoint [16, ", "model [19, "])


def checkpoint_wrong_model_argument(tmp):
    return lambda: models.load_checkpoint({"a": 1}, tmp / "x.pth"), ["`model` must be a torch.nn.Module", "dict"]


CASES = [
    # data: folders and splits
    (missing_root, FileNotFoundError),
    (root_is_a_file, FileNotFoundError),
    (missing_image_folder, FileNotFoundError),
    (missing_label_folder, FileNotFoundError),
    (missing_split, FileNotFoundError),
    (missing_label_split_required, FileNotFoundError),
    (empty_split, FileNotFoundError),
    (empty_image_folder, FileNotFoundError),
    # data: pairing and list files
    (image_without_label, FileNotFoundError),
    (image_without_label_cityscapes, FileNotFoundError),
    (label_without_image, FileNotFoundError),
    (label_without_image_cityscapes, FileNotFoundError),
    (list_file_missing, FileNotFoundError),
    (list_file_names_missing_file, FileNotFoundError),
    (list_file_empty, ValueError),
    (unknown_dataset_kind, ValueError),
    # data: files that do not decode, labels of the wrong kind
    (corrupt_png_image, RuntimeError),
    (truncated_png_image, RuntimeError),
    (corrupt_jpeg_image, RuntimeError),
    (truncated_jpeg_image, RuntimeError),
    (text_file_named_png, RuntimeError),
    (corrupt_label_png, RuntimeError),
    (truncated_label_png, RuntimeError),
    (rgb_label, RuntimeError),
    (rgba_label, RuntimeError),
    (one_bit_label, RuntimeError),
    (label_of_another_size, RuntimeError),
    (native_sizes_differ_in_a_batch, RuntimeError),
    (train_without_size, ValueError),
    (batch_larger_than_split, ValueError),
    # checkpoints
    (checkpoint_missing, FileNotFoundError),
    (checkpoint_is_a_directory, FileNotFoundError),
    (checkpoint_truncated, RuntimeError),
    (checkpoint_empty_file, RuntimeError),
    (checkpoint_not_a_checkpoint, RuntimeError),
    (checkpoint_without_tensors, ValueError),
    (checkpoint_with_pickled_objects, RuntimeError),
    (checkpoint_of_another_network, RuntimeError),
    (checkpoint_wrong_class_count_strict, RuntimeError),
    (checkpoint_wrong_model_argument, TypeError),
]


@pytest.mark.parametrize("make,error", [pytest.param(m, e, id=m.__name__) for m, e in CASES])
def test_bad_input_gets_a_clear_error(make, error, tmp_path):
    call, expected = make(tmp_path)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in: {message}"
    assert "Traceback" not in message and "nvidia.dali" not in message.lower()
    assert len(message) < 1200, "one clear message, not a dump"


def test_wrong_class_count_is_reported_and_skipped_without_strict(tmp_path, capsys):
    """Documented graceful handling: a 16-class head into a 19-class model is
    left as initialised and reported (missing + printed shapes); the driver's
    --init refuses such a checkpoint because it leaves tensors unset."""
    path = tmp_path / "model.pth"
    torch.save(models.build("small_deeplab", num_classes=16).state_dict(), path)
    model = _model()
    head = {k: v.clone() for k, v in model.state_dict().items()}
    missing, unexpected = models.load_checkpoint(model, path)
    assert missing and all(re.search(r"(classifier|head|aspp)", k) for k in missing), missing
    assert unexpected == []
    for k in missing:
        assert torch.equal(model.state_dict()[k], head[k])  # left as initialised
    err = capsys.readouterr().err
    assert str(path) in err and "shape mismatch, left as initialised" in err and "checkpoint [16" in err


def test_census_has_the_promised_size():
    assert len(CASES) >= 20
    assert len({m.__name__ for m, _ in CASES}) == len(CASES)


def test_a_list_file_may_leave_labels_without_images(tmp_path):
    """Documented graceful handling: with a list file the set is a chosen
    subset, so labels of images outside it (or not unpacked) are fine."""
    root = gta5(tmp_path, n=3)
    (root / "images" / "00003.png").unlink()
    lst = tmp_path / "subset.txt"
    lst.write_text("00001.png\n00002.png\n")
    ds = data.GTA5(root, list_file=lst)
    assert len(ds) == 2 and ds.label_path(1).endswith("00002.png")


def test_multichannel_labels_stay_allowed_where_they_are_the_format(tmp_path):
    """SYNTHIA-style folders (label_ids="synthia") read the class from channel 0
    of a multi-channel label; other layouts refuse colour labels (above)."""
    root = tmp_path / "syn"
    _png(root / "RGB" / "0000000.png", _image())
    lab = np.zeros((H, W, 3), np.uint8)
    lab[..., 0] = 3  # SYNTHIA raw id 3 = road
    _png(root / "GT" / "LABELS" / "0000000.png", lab)
    batch = first_batch(data.SYNTHIA(root))
    assert (batch["label"] == 0).all()


def test_reliability_doc_table_lists_every_case():
    text = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text()
    section = re.split(r"\n##+ ", text.split("\n## Data and checkpoints\n", 1)[1], maxsplit=1)[0]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \|", section, re.M)
    assert rows == [m.__name__ for m, _ in CASES]
