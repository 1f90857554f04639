"""Tiny dataset trees in each layout for the data tests."""

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from lse_fast.data import CITYSCAPES_ID_TO_TRAINID, SYNTHIA_ID_TO_TRAINID

CS_IDS = np.array([0, 1, 4, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33, 34, -1 % 256],
                  dtype=np.uint8)
SYN_IDS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 300],
                   dtype=np.int64)


def expected_train_ids(raw, mapping):
    out = np.full(raw.shape, 255, np.uint8)
    for k, v in mapping.items():
        out[raw == k] = v
    return out


def blocky_labels(rng, h, w, ids, block=8):
    """Labels made of constant blocks (so bilinear image edges stay local)."""
    small = rng.choice(ids, size=(h // block + 1, w // block + 1))
    return np.repeat(np.repeat(small, block, 0), block, 1)[:h, :w]


def colour_of(train_ids):
    """A distinct RGB colour per trainId (255 -> black)."""
    pal = np.zeros((256, 3), np.uint8)
    rng = np.random.default_rng(123)
    pal[:19] = rng.integers(30, 256, (19, 3))
    return pal[train_ids]


def write_png16(path, arr):
    """A 16-bit RGB PNG (what Pillow cannot write), rows with filters 0, 1, 2."""
    h, w, c = arr.shape
    raw = arr.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * c * 2).astype(np.int16)
    bpp = c * 2
    rows = []
    prev = np.zeros(w * c * 2, np.int16)
    for y in range(h):
        f = y % 3
        r = raw[y]
        if f == 0:
            enc = r
        elif f == 1:
            enc = r - np.concatenate([np.zeros(bpp, np.int16), r[:-bpp]])
        else:
            enc = r - prev
        rows.append(bytes([f]) + (enc % 256).astype(np.uint8).tobytes())
        prev = r
    data = zlib.compress(b"".join(rows))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _image_for(rng, lab_train):
    img = colour_of(lab_train).astype(np.int16) + rng.integers(-20, 21, lab_train.shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_cityscapes(root, *, n_train=5, n_val=3, h=64, w=128, label_type="labelIds", seed=0, labels=True):
    rng = np.random.default_rng(seed)
    raws = {}
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            city = ("aachen", "bonn")[i % 2]
            stem = f"{city}_{i:06d}_000019"
            ip = Path(root) / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            ip.parent.mkdir(parents=True, exist_ok=True)
            raw = blocky_labels(rng, h, w, CS_IDS).astype(np.uint8)
            tid = expected_train_ids(raw, CITYSCAPES_ID_TO_TRAINID)
            Image.fromarray(_image_for(rng, tid)).save(ip)
            if labels:
                lp = Path(root) / "gtFine" / split / city / f"{stem}_gtFine_{label_type}.png"
                lp.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(raw if label_type == "labelIds" else tid, mode="L").save(lp)
            raws[(split, str(ip))] = tid
    return raws


def make_gta5(root, *, n=6, h=64, w=128, seed=1, palette=True):
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        (Path(root) / "images").mkdir(parents=True, exist_ok=True)
        (Path(root) / "labels").mkdir(parents=True, exist_ok=True)
        raw = blocky_labels(rng, h, w, CS_IDS).astype(np.uint8)
        tid = expected_train_ids(raw, CITYSCAPES_ID_TO_TRAINID)
        ip = Path(root) / "images" / f"{i + 1:05d}.png"
        Image.fromarray(_image_for(rng, tid)).save(ip)
        lab = Image.fromarray(raw, mode="L")
        if palette:  # GTA5 labels are palette PNGs: ids are the indices
            lab = lab.convert("P")
            lab.putpalette(list(np.random.default_rng(7).integers(0, 256, 768).astype(np.uint8)))
            lab.putdata(raw.flatten().tolist())
        lab.save(Path(root) / "labels" / f"{i + 1:05d}.png")
        out[str(ip)] = tid
    return out


def make_synthia(root, *, n=4, h=64, w=128, seed=2):
    rng = np.random.default_rng(seed)
    out = {}
    (Path(root) / "RGB").mkdir(parents=True, exist_ok=True)
    (Path(root) / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        raw = blocky_labels(rng, h, w, SYN_IDS)
        tid = expected_train_ids(raw, SYNTHIA_ID_TO_TRAINID)
        ip = Path(root) / "RGB" / f"{i:07d}.png"
        Image.fromarray(_image_for(rng, tid)).save(ip)
        inst = rng.integers(0, 65536, (h, w))  # instance ids in the 2nd channel
        write_png16(Path(root) / "GT" / "LABELS" / f"{i:07d}.png", np.stack([raw, inst, np.zeros_like(raw)], -1))
        out[str(ip)] = tid
    return out
