"""Label maps in the official Cityscapes result format, written and read back.

One writer serves ``python -m lse_fast.evaluate --export`` and the driver's
``--export`` (final predictions and each round's pseudo-labels). A tree
written to DIR looks like::

    DIR/labelIds/<city>/<image name>.png   8-bit Cityscapes label ids (trainId -> id, ignore -> 0 'unlabeled')
    DIR/color/<city>/<image name>.png      RGB in the Cityscapes colours (ignore black)
    DIR/trainIds/<city>/<image name>.png   8-bit trainIds, 255 = ignore (optional)

``<image name>`` is the input image's file name (``frankfurt_000000_000294_leftImg8bit.png``)
and ``<city>`` its folder. The official evaluator
(``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``) walks
``$CITYSCAPES_RESULTS`` recursively and takes, for each ground-truth file
``<city>_<seq>_<frame>_gtFine_labelIds.png``, the one PNG whose name matches
``<city>_<seq>_<frame>*.png``, read as label ids; so it is pointed at
``DIR/labelIds`` (the colour and trainId PNGs carry the same names and would
be a second match). See docs/evaluation.md.

:func:`read_predictions` reads such a tree back (or any tree that follows the
official matching rule) for a dataset, and names the file of every missing,
extra, duplicate or wrong-size prediction.
"""

from __future__ import annotations

import io
import os
import secrets
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lse_fast.data import CITYSCAPES_ID_TO_TRAINID, SYNTHIA16_TRAIN_IDS, TRAIN_ID_COLORS

FORMATS = ("labelIds", "color", "trainIds")
DEFAULT_FORMATS = ("labelIds", "color")
IGNORE = 255

TRAIN_ID_PALETTE = np.zeros((256, 3), np.uint8)
TRAIN_ID_PALETTE[: len(TRAIN_ID_COLORS)] = np.array(TRAIN_ID_COLORS, np.uint8)

TRAIN_ID_TO_LABEL_ID = np.zeros(256, np.uint8)  # 255 (ignore) and anything unknown -> 0 'unlabeled'
for _label_id, _train_id in CITYSCAPES_ID_TO_TRAINID.items():
    TRAIN_ID_TO_LABEL_ID[_train_id] = _label_id

LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE, np.uint8)
for _label_id, _train_id in CITYSCAPES_ID_TO_TRAINID.items():
    LABEL_ID_TO_TRAIN_ID[_label_id] = _train_id

_WHO = "lse_fast.evaluate.writer"


def to_train_ids(labels, num_classes: int) -> np.ndarray:
    """uint8 [..., H, W] Cityscapes trainIds of class indices (a tensor or
    array); a 16-class (SYNTHIA) head's index i is trainId
    ``SYNTHIA16_TRAIN_IDS[i]``; 255 stays 255."""
    lab = labels.to("cpu", torch.int64).numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels, np.int64)
    if num_classes == 16:
        lut = np.full(256, IGNORE, np.uint8)
        lut[:16] = SYNTHIA16_TRAIN_IDS
        return lut[np.clip(lab, 0, 255)]
    return lab.astype(np.uint8)


def from_train_ids(train_ids: np.ndarray, num_classes: int) -> np.ndarray:
    """The inverse of :func:`to_train_ids`: class indices (uint8, 255 for
    ignore and for trainIds a 16-class head does not have)."""
    if num_classes == 16:
        lut = np.full(256, IGNORE, np.uint8)
        lut[list(SYNTHIA16_TRAIN_IDS)] = np.arange(16, dtype=np.uint8)
        return lut[train_ids]
    return train_ids


def prediction_path(image_path, fmt: str = "labelIds") -> Path:
    """Where the prediction for `image_path` goes, relative to the export
    folder: ``<fmt>/<city>/<image file name, extension .png>``."""
    p = Path(image_path)
    return Path(fmt) / p.parent.name / (p.stem + ".png")


def _existing_files(directory: Path, formats) -> list:
    found = []
    for fmt in formats:
        d = directory / fmt
        if d.is_dir():
            found.extend(sorted(str(Path(r) / f) for r, _, fs in os.walk(d) for f in fs))
    return found


def _atomic_save(path: Path, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file unique to this
    process: a kill leaves the previous file or the new one, never half a
    PNG, and a failed write removes its own temporary file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class CityscapesWriter:
    """Writes label maps in the official format under `directory`.

    Args:
        directory: the export folder (created when needed).
        num_classes: 19 (trainIds) or 16 (a SYNTHIA head; written as the
            Cityscapes trainIds / label ids of its classes).
        formats: subset of ``FORMATS``; default labelIds and color.
        overwrite: without it, a folder that already holds files of these
            formats is an error naming one of them (raised here, before
            anything is written); with it, the PNGs there are removed first
            so the tree holds this export only.
        save: ``save(path, png_bytes)`` writes one file; default: atomically
            through a temporary file of a name unique to this process. The
            driver passes its run directory's atomic write (signal-safe).
    """

    def __init__(self, directory, *, num_classes: int = 19, formats=DEFAULT_FORMATS, overwrite: bool = False,
                 option: str = "export directory", save=None):
        self.directory = Path(directory)
        self._save = save or _atomic_save
        self.num_classes = int(num_classes)
        self.formats = tuple(formats)
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ValueError(f"{_WHO}: `formats` must be a non-empty subset of {', '.join(FORMATS)}, got {formats!r}")
        if self.directory.exists() and not self.directory.is_dir():
            raise FileExistsError(f"{_WHO}: {option} {str(self.directory)!r} exists and is not a directory")
        existing = _existing_files(self.directory, self.formats)
        if existing and not overwrite:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise FileExistsError(f"{_WHO}: {option} {str(self.directory)!r} already holds {existing[0]!r}{more}; "
                                  "give another directory or --overwrite")
        for f in existing:
            if f.endswith(".png"):
                Path(f).unlink()
        self.written = 0
        self._sources = {}  # written path -> the image it belongs to

    def write(self, image_path, labels) -> None:
        """Writes the [H, W] class-index map `labels` (tensor or array, 255 =
        ignore) predicted for the image at `image_path`."""
        train_ids = to_train_ids(labels, self.num_classes)
        if train_ids.ndim != 2:
            raise ValueError(f"{_WHO}: labels for {str(image_path)!r} must be [H, W], "
                             f"got shape {list(train_ids.shape)}")
        train_ids = np.ascontiguousarray(train_ids)
        key = prediction_path(image_path)
        if key in self._sources:
            raise ValueError(f"{_WHO}: images {self._sources[key]!r} and {str(image_path)!r} would both be written "
                             f"as {str(key)!r} (same folder and file name); nothing of the second was written")
        self._sources[key] = str(image_path)
        for fmt in self.formats:
            path = self.directory / prediction_path(image_path, fmt)
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "labelIds":
                img = Image.fromarray(TRAIN_ID_TO_LABEL_ID[train_ids], mode="L")
            elif fmt == "trainIds":
                img = Image.fromarray(train_ids, mode="L")
            else:
                img = Image.fromarray(TRAIN_ID_PALETTE[train_ids])
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            self._save(path, buf.getvalue())
        self.written += 1

    def write_batch(self, image_paths, labels) -> None:
        """:meth:`write` for each map of `labels` [N, H, W]."""
        for path, lab in zip(image_paths, labels):
            self.write(path, lab)


# --------------------------------------------------------------------------- reading a prediction tree
def _prefixes(name: str):
    """'a_b_c_d.png' -> 'a_b_c_d', 'a_b_c', 'a_b', 'a' (longest first)."""
    parts = Path(name).stem.split("_")
    return ["_".join(parts[:n]) for n in range(len(parts), 0, -1)]


def image_key(image_path) -> str:
    """The part of an image's name a prediction's name must start with:
    ``<city>_<seq>_<frame>`` for a Cityscapes name (the official rule),
    else the file name without extension."""
    stem = Path(image_path).stem
    parts = stem.split("_")
    return "_".join(parts[:3]) if len(parts) >= 4 else stem


def match_predictions(directory, image_paths) -> list:
    """For each image, the one PNG under `directory` (searched recursively)
    whose name starts with its :func:`image_key` followed by '_' or '.'
    (the official evaluator's ``<city>_<seq>_<frame>*.png``); raises
    ValueError naming the file for a missing, duplicate or extra PNG."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{_WHO}: prediction folder {str(directory)!r} does not exist")
    keys = {}
    for i, p in enumerate(image_paths):
        keys.setdefault(image_key(p), i)
    found = [None] * len(image_paths)
    for root, _, files in sorted(os.walk(directory)):
        for f in sorted(files):
            if not f.lower().endswith(".png"):
                continue
            path = Path(root) / f
            i = next((keys[k] for k in _prefixes(f) if k in keys), None)
            if i is None:
                raise ValueError(f"{_WHO}: prediction {str(path)!r} matches no image of the dataset (expected names "
                                 f"such as {image_key(image_paths[0])}*.png); remove it or point at the right folder")
            if found[i] is not None:
                raise ValueError(f"{_WHO}: two predictions for image {str(image_paths[i])!r}: {str(found[i])!r} and "
                                 f"{str(path)!r} (point at one format's folder, e.g. DIR/labelIds)")
            found[i] = path
    for i, p in enumerate(found):
        if p is None:
            raise ValueError(f"{_WHO}: no prediction for image {str(image_paths[i])!r} under {str(directory)!r} "
                             f"(expected {str(directory / prediction_path(image_paths[i], ''))!r} "
                             f"or another {image_key(image_paths[i])}*.png)")
    return found


def read_prediction(path, encoding: str = "labelIds") -> np.ndarray:
    """trainIds (uint8 [H, W], 255 = ignore) of one prediction PNG in
    `encoding` 'labelIds' or 'trainIds'."""
    if encoding not in ("labelIds", "trainIds"):
        raise ValueError(f"{_WHO}: `encoding` must be 'labelIds' or 'trainIds', got {encoding!r}")
    try:
        with Image.open(path) as im:
            if len(im.getbands()) != 1:
                raise ValueError(f"{_WHO}: prediction {str(path)!r} has {len(im.getbands())} channels (mode "
                                 f"{im.mode!r}); expected an 8-bit map of {encoding} (a colour image is not ids)")
            arr = np.asarray(im)
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{_WHO}: cannot read prediction {str(path)!r}: {e}") from None
    if not np.issubdtype(arr.dtype, np.integer) or arr.max(initial=0) > 255:
        raise ValueError(f"{_WHO}: prediction {str(path)!r} is not an 8-bit map of {encoding}")
    arr = arr.astype(np.uint8)
    return LABEL_ID_TO_TRAIN_ID[arr] if encoding == "labelIds" else arr


def read_predictions(directory, dataset, *, encoding: str = "labelIds", sizes=None):
    """Yields (index, trainIds uint8 [H, W]) for every image of `dataset`
    from the prediction tree under `directory` (:func:`match_predictions`).
    `sizes`: callable i -> (H, W) expected (e.g. the label's size); a
    prediction of another size is a ValueError naming the file. A label-id
    prediction whose pixels mostly map to no evaluated class gets a warning
    (trainIds read as label ids give an mIoU near 0 without any error)."""
    paths = [dataset.image_path(i) for i in range(len(dataset))]
    files = match_predictions(directory, paths)
    warned = False
    for i, f in enumerate(files):
        ids = read_prediction(f, encoding)
        if sizes is not None:
            want = tuple(sizes(i))
            if tuple(ids.shape) != want:
                raise ValueError(f"{_WHO}: prediction {str(f)!r} is {ids.shape[0]}x{ids.shape[1]} (HxW); its label "
                                 f"is {want[0]}x{want[1]}")
        if encoding == "labelIds" and not warned and (ids == IGNORE).mean() > 0.5:
            warnings.warn(f"{_WHO}: {str(f)!r}: most pixels are label ids of no evaluated class; is this a trainId "
                          "map? (then read it with encoding 'trainIds' / --prediction-encoding trainIds)",
                          RuntimeWarning, stacklevel=2)
            warned = True
        yield i, ids
