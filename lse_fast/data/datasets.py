"""Segmentation datasets: file pairs, label lookup tables and class lists.

A dataset only knows its files. Decoding, augmentation and batching live in
the loaders (`lse_fast.data.loader`: DALI; `lse_fast.data.pil`: the PIL/NumPy
oracle). Indices are stable: files are sorted by their path relative to the
image directory. A list file (one relative image path or file name per line,
as the public splits use) selects a subset, still sorted.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE_INDEX = 255
NUM_CLASSES = 19

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

# Cityscapes label id -> trainId (GTA5 uses the same ids); every other id -> 255.
CITYSCAPES_ID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
# SYNTHIA-RAND-CITYSCAPES raw class id -> trainId (16 classes: no terrain, truck, train).
SYNTHIA_ID_TO_TRAINID = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12,
    8: 13, 19: 15, 12: 17, 11: 18,
}

TRAIN_ID_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
"""Cityscapes' colour of each trainId (its labels definition); 255 (ignore) is black."""

LABEL_SIZE_MISMATCH = ("error", "resize", "skip")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def make_lut(mapping: dict[int, int] | None, size: int = 65536) -> np.ndarray:
    """A uint8 lookup table raw id -> trainId (255 elsewhere); `None` is the
    identity on 0..18 (labels already in trainIds)."""
    lut = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    if mapping is None:
        mapping = {i: i for i in range(NUM_CLASSES)}
    for k, v in mapping.items():
        lut[k] = v
    return lut


def _read_list_file(list_file, who):
    path = Path(list_file)
    if not path.is_file():
        raise FileNotFoundError(f"{who}: list file {str(path)!r} does not exist")
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line.split()[0])
    if not entries:
        raise ValueError(f"{who}: list file {str(path)!r} names no files")
    return entries


class SegmentationDataset:
    """Base class: sorted (image, label) path pairs plus label semantics.

    Attributes: `name`, `root`, `has_labels`, `num_classes` (19),
    `class_names` (19 names by trainId), `classes` (sorted trainIds present in
    this dataset's label set), `label_lut` (uint8 [65536] raw id -> trainId),
    `label_channel` (channel of a multi-channel label that holds the class).
    """

    name = "dataset"
    num_classes = NUM_CLASSES
    class_names = CLASS_NAMES
    label_channel = 0
    multichannel_labels = False  # True: labels may have several channels (SYNTHIA), class in `label_channel`
    label_size_mismatch = "error"  # see ImageFolderPairs

    def __init__(self, root, images, labels, *, label_mapping, classes):
        self.root = Path(root)
        self._images = [str(p) for p in images]
        self._labels = None if labels is None else [str(p) for p in labels]
        self.label_mapping = label_mapping
        self.label_lut = make_lut(label_mapping)
        self.classes = sorted(classes)

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    def __len__(self) -> int:
        return len(self._images)

    def _check_index(self, i):
        if not isinstance(i, (int, np.integer)) or not -len(self) <= i < len(self):
            raise IndexError(f"{self.name}: index {i!r} out of range for {len(self)} images")
        return int(i)

    def image_path(self, i) -> str:
        return self._images[self._check_index(i)]

    def label_path(self, i) -> str | None:
        i = self._check_index(i)
        return None if self._labels is None else self._labels[i]

    def __repr__(self):
        return (f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, "
                f"has_labels={self.has_labels}, classes={len(self.classes)})")


def _check_root(root, who):
    if root is None or str(root) == "":
        raise ValueError(f"{who}: `root` must be a directory path, got {root!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{who}: dataset root {str(root)!r} does not exist or is not a directory")
    return root


def _scan(directory: Path, suffix: str | None = None):
    """Sorted relative paths (posix) of image files under `directory` (recursive)."""
    out = []
    for dirpath, _, files in os.walk(directory):
        for f in files:
            if suffix is not None:
                if f.endswith(suffix):
                    out.append(os.path.relpath(os.path.join(dirpath, f), directory))
            elif f.lower().endswith(IMAGE_EXTENSIONS):
                out.append(os.path.relpath(os.path.join(dirpath, f), directory))
    return sorted(Path(p).as_posix() for p in out)


def _select(rel_paths, list_file, who, directory):
    if list_file is None:
        return rel_paths
    wanted = _read_list_file(list_file, who)
    have = set(rel_paths)
    by_name = {}
    for p in rel_paths:
        by_name.setdefault(Path(p).name, []).append(p)
    chosen = set()
    for w in wanted:
        w = Path(w).as_posix()
        if w in have:
            chosen.add(w)
        elif len(by_name.get(Path(w).name, [])) == 1:
            chosen.add(by_name[Path(w).name][0])
        else:
            raise FileNotFoundError(
                f"{who}: list file {str(list_file)!r} names {w!r}, which is not an image under {str(directory)!r}")
    return sorted(chosen)


def _check_no_orphan_labels(label_dir, label_rels, paired, who, image_hint):
    """Without a list file every label must have its image: a label left
    over means images are missing (e.g. a partly unpacked archive)."""
    orphans = sorted(set(label_rels) - {Path(p).as_posix() for p in paired})
    if orphans:
        raise FileNotFoundError(
            f"{who}: label {str(label_dir / orphans[0])!r} has no image (expected {image_hint(orphans[0])})"
            + (f" and {len(orphans) - 1} more labels without images" if len(orphans) > 1 else "")
            + "; restore the missing images, or pass `list_file` to use a subset")


class ImageFolderPairs(SegmentationDataset):
    """`root/<images>/**/<stem>.<ext>` paired with `root/<labels>/**/<stem>.png`
    by relative path without extension.

    label_ids: "cityscapes" (Cityscapes label ids, mapped to trainIds),
    "train" (already trainIds 0..18 / 255), or "synthia" (SYNTHIA raw ids).
    require_labels: if False and the label directory is missing, the dataset
    has no labels (a target set); if True a missing label directory is an error.
    label_size_mismatch: a label whose size differs from its image (a few
    GTA5 pairs): "error" (when the pair is loaded), "resize" (nearest-resized
    to the image when loaded, with a warning naming the file) or "skip"
    (every pair's header is read here and such pairs are left out, with one
    warning listing them; ``skipped`` holds their image paths).
    """

    name = "folder"

    def __init__(self, root, *, images="images", labels="labels", label_ids="cityscapes",
                 list_file=None, require_labels=False, label_suffix=".png", name=None,
                 label_size_mismatch="error"):
        who = f"lse_fast.data.{type(self).__name__}"
        if label_size_mismatch not in LABEL_SIZE_MISMATCH:
            raise ValueError(f"{who}: `label_size_mismatch` must be one of {LABEL_SIZE_MISMATCH}, "
                             f"got {label_size_mismatch!r}")
        root = _check_root(root, who)
        mappings = {"cityscapes": CITYSCAPES_ID_TO_TRAINID, "train": None, "synthia": SYNTHIA_ID_TO_TRAINID}
        if label_ids not in mappings:
            raise ValueError(f"{who}: `label_ids` must be one of {sorted(mappings)}, got {label_ids!r}")
        image_dir = root / images
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{who}: image directory {str(image_dir)!r} does not exist")
        rel = _select(_scan(image_dir), list_file, who, image_dir)
        if not rel:
            raise FileNotFoundError(f"{who}: no images found under {str(image_dir)!r} "
                                    f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        label_dir = root / labels
        label_paths = None
        if label_dir.is_dir():
            label_paths = []
            for r in rel:
                lp = label_dir / (str(Path(r).with_suffix("")) + label_suffix)
                if not lp.is_file():
                    raise FileNotFoundError(f"{who}: image {str(image_dir / r)!r} has no label (expected {str(lp)!r})")
                label_paths.append(lp)
            if list_file is None:
                _check_no_orphan_labels(
                    label_dir, _scan(label_dir, label_suffix), [lp.relative_to(label_dir) for lp in label_paths], who,
                    lambda o: f"{str(image_dir / Path(o).with_suffix(''))!r} with an image extension")
        elif require_labels:
            raise FileNotFoundError(f"{who}: label directory {str(label_dir)!r} does not exist")
        mapping = mappings[label_ids]
        classes = range(NUM_CLASSES) if mapping is None else set(mapping.values())
        if name is not None:
            self.name = name
        self.multichannel_labels = label_ids == "synthia"
        images_ = [image_dir / r for r in rel]
        self.label_size_mismatch = label_size_mismatch
        self.skipped = []
        if label_size_mismatch == "skip" and label_paths is not None:
            images_, label_paths, self.skipped = _drop_mismatched(images_, label_paths, who)
            if not images_:
                raise FileNotFoundError(f"{who}: every label under {str(label_dir)!r} differs in size from its image")
        super().__init__(root, images_, label_paths, label_mapping=mapping, classes=classes)


def _header_size(path, who):
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:  # PIL raises several types; name the file
        raise RuntimeError(f"{who}: cannot read the header of {str(path)!r}: {e}") from None
    return h, w


def _drop_mismatched(images, labels, who):
    """Pairs whose image and label sizes agree (headers only), and the
    skipped ones with one warning naming them."""
    keep_i, keep_l, skipped = [], [], []
    for ip, lp in zip(images, labels):
        ihw, lhw = _header_size(ip, who), _header_size(lp, who)
        if ihw == lhw:
            keep_i.append(ip)
            keep_l.append(lp)
        else:
            skipped.append((str(ip), ihw, lhw))
    if skipped:
        shown = ", ".join(f"{Path(p).name} (image {a[0]}x{a[1]}, label {b[0]}x{b[1]})" for p, a, b in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(f"{who}: skipped {len(skipped)} of {len(images)} pairs whose label size differs from the "
                      f"image: {shown}{more}", RuntimeWarning, stacklevel=3)
    return keep_i, keep_l, [p for p, _, _ in skipped]


class GTA5(ImageFolderPairs):
    """GTA5: `root/images/NNNNN.png`, `root/labels/NNNNN.png` (Cityscapes label
    ids; palette PNGs are read by index)."""

    name = "gta5"

    def __init__(self, root, *, list_file=None, label_size_mismatch="error"):
        super().__init__(root, images="images", labels="labels", label_ids="cityscapes",
                         list_file=list_file, require_labels=True, label_size_mismatch=label_size_mismatch)


class SYNTHIA(ImageFolderPairs):
    """SYNTHIA-RAND-CITYSCAPES: `root/RGB/*.png`, `root/GT/LABELS/*.png`. The
    label is a multi-channel 16-bit PNG whose first channel holds the class id;
    16 classes (no terrain, truck, train)."""

    name = "synthia"

    def __init__(self, root, *, list_file=None, label_size_mismatch="error"):
        super().__init__(root, images="RGB", labels=os.path.join("GT", "LABELS"), label_ids="synthia",
                         list_file=list_file, require_labels=True, label_size_mismatch=label_size_mismatch)


class Cityscapes(SegmentationDataset):
    """Cityscapes: `root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`,
    labels `root/gtFine/<split>/<city>/<name>_gtFine_labelIds.png` (mapped to
    trainIds) or `..._gtFine_labelTrainIds.png` (used as is).

    label_type: "auto" (labelIds when any exist under gtFine/<split>, else
    labelTrainIds), "labelIds", "labelTrainIds". Without `gtFine/<split>` the
    set has no labels (fine for a target training set) unless require_labels.
    """

    name = "cityscapes"

    def __init__(self, root, split="train", *, list_file=None, label_type="auto", require_labels=False):
        who = "lse_fast.data.Cityscapes"
        root = _check_root(root, who)
        if not isinstance(split, str) or not split:
            raise ValueError(f"{who}: `split` must be a split name such as 'train' or 'val', got {split!r}")
        if label_type not in ("auto", "labelIds", "labelTrainIds"):
            raise ValueError(f"{who}: `label_type` must be 'auto', 'labelIds' or 'labelTrainIds', got {label_type!r}")
        image_dir = root / "leftImg8bit" / split
        if not image_dir.is_dir():
            splits = sorted(p.name for p in (root / "leftImg8bit").glob("*") if p.is_dir())
            raise FileNotFoundError(f"{who}: image directory {str(image_dir)!r} does not exist "
                                    f"(available splits: {', '.join(splits) if splits else 'none'})")
        rel = _select(_scan(image_dir, "_leftImg8bit.png"), list_file, who, image_dir)
        if not rel:
            raise FileNotFoundError(f"{who}: no images (*_leftImg8bit.png) found under {str(image_dir)!r}")
        label_dir = root / "gtFine" / split
        labels = None
        mapping = CITYSCAPES_ID_TO_TRAINID
        if label_dir.is_dir():
            if label_type == "auto":
                has_ids = any(f.endswith("_gtFine_labelIds.png") for _, _, fs in os.walk(label_dir) for f in fs)
                label_type = "labelIds" if has_ids else "labelTrainIds"
            if label_type == "labelTrainIds":
                mapping = None
            suffix = f"_gtFine_{label_type}.png"
            labels = []
            for r in rel:
                lp = label_dir / (r[: -len("_leftImg8bit.png")] + suffix)
                if not lp.is_file():
                    raise FileNotFoundError(f"{who}: image {str(image_dir / r)!r} has no label (expected {str(lp)!r})")
                labels.append(lp)
            if list_file is None:
                _check_no_orphan_labels(
                    label_dir, _scan(label_dir, suffix), [lp.relative_to(label_dir) for lp in labels], who,
                    lambda o: repr(str(image_dir / (o[: -len(suffix)] + "_leftImg8bit.png"))))
        elif require_labels:
            raise FileNotFoundError(f"{who}: label directory {str(label_dir)!r} does not exist")
        self.split = split
        self.label_type = None if labels is None else label_type
        super().__init__(root, [image_dir / r for r in rel], labels, label_mapping=mapping,
                         classes=range(NUM_CLASSES))


SYNTHIA16_TRAIN_IDS = tuple(c for c in range(NUM_CLASSES) if c not in (9, 14, 16))
"""Cityscapes trainIds of the 16 classes SYNTHIA shares (no terrain, truck,
train); index i of a 16-class head is trainId SYNTHIA16_TRAIN_IDS[i]."""


def to_synthia16(dataset):
    """Relabels `dataset` in place to the 16-class space of 16-class SYNTHIA
    heads: label i is trainId ``SYNTHIA16_TRAIN_IDS[i]``; terrain, truck and
    train become 255 (ignored). Returns the dataset."""
    if getattr(dataset, "num_classes", NUM_CLASSES) == 16:
        return dataset
    remap = np.full(256, IGNORE_INDEX, np.uint8)
    remap[list(SYNTHIA16_TRAIN_IDS)] = np.arange(16, dtype=np.uint8)
    dataset.label_lut = remap[dataset.label_lut]
    dataset.classes = sorted(int(remap[c]) for c in dataset.classes if remap[c] != IGNORE_INDEX)
    dataset.class_names = tuple(CLASS_NAMES[t] for t in SYNTHIA16_TRAIN_IDS)
    dataset.num_classes = 16
    return dataset


def from_spec(spec, split="train", **kwargs):
    """"cityscapes:PATH", "gta5:PATH", "synthia:PATH" or "folder:PATH" -> dataset.
    `split` is used by Cityscapes only; extra keyword arguments go to the class."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"lse_fast.data.from_spec: `spec` must look like 'KIND:PATH' with KIND one of "
                         f"cityscapes, gta5, synthia, folder; got {spec!r}")
    kind, path = spec.split(":", 1)
    kind = kind.strip().lower()
    if kind == "cityscapes":
        return Cityscapes(path, split, **kwargs)
    if kind == "gta5":
        return GTA5(path, **kwargs)
    if kind == "synthia":
        return SYNTHIA(path, **kwargs)
    if kind == "folder":
        return ImageFolderPairs(path, **kwargs)
    raise ValueError(f"lse_fast.data.from_spec: unknown dataset kind {kind!r} in {spec!r}; "
                     f"expected one of cityscapes, gta5, synthia, folder")
