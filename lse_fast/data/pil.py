"""The plain PIL/NumPy/PyTorch loader: the test oracle of the DALI loader.

Same interface and the same sample semantics as `lse_fast.data.loader`, one
image at a time on the CPU. Not meant for training (slow); the tests check
that the DALI pipeline gives the same pixels and labels as this one.

Per sample, with (H, W) the native size:
  - train=True: scaled size (round(H*s), round(W*s)), s ~ U(scale_range);
    image resized bilinear (half-pixel centres, no antialiasing, float),
    label resized nearest (half-pixel centres); crop `size` at a random
    anchor, padded at the bottom/right (image 0 = black before normalisation,
    label 255) where the scaled image is smaller; horizontal flip with p=0.5.
  - train=False, size given: image bilinear (as above), label nearest to size.
  - size=None: native pixels.
Then normalisation and CHW layout.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lse_fast.data._base import LoaderBase, UnreadableFile, normalization_constants, resize_nearest


def _resize_bilinear(img, out_hw):
    """float32 [H, W, 3] -> [oh, ow, 3]: PyTorch bilinear, align_corners=False, no antialias."""
    if img.shape[:2] == tuple(out_hw):
        return img
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    return F.interpolate(t, size=out_hw, mode="bilinear", align_corners=False, antialias=False)[0].permute(1, 2, 0).numpy()


def _crop_pad(arr, anchor, size, fill):
    y, x = anchor
    out = np.full((size[0], size[1]) + arr.shape[2:], fill, dtype=arr.dtype)
    part = arr[y:y + size[0], x:x + size[1]]
    out[:part.shape[0], :part.shape[1]] = part
    return out


class PILLoader(LoaderBase):
    who = "lse_fast.data.pil.loader"

    def _sample(self, epoch, index, label):
        path = self.dataset.image_path(int(index))
        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"), dtype=np.float32)
        except Exception as e:
            raise UnreadableFile(path, f"lse_fast.data: cannot decode image file {path!r}: {e}") from None
        hw = img.shape[:2]
        if self.train:
            p = self.aug(epoch, index, hw)
            img = _crop_pad(_resize_bilinear(img, p.scaled), p.anchor, self.size, 0.0)
            if label is not None:
                label = _crop_pad(resize_nearest(label, p.scaled), p.anchor, self.size, 255)
            if p.flip:
                img = img[:, ::-1]
                label = None if label is None else label[:, ::-1]
        elif self.size is not None:
            img = _resize_bilinear(img, self.size)
            if label is not None:
                label = resize_nearest(label, self.size)
        order, mean, std = normalization_constants(self.normalization)
        if order == "BGR":
            img = img[..., ::-1]
        img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32), label

    def _iterate(self, epoch):
        for indices in self.batches(epoch):
            indices, loaded = self._kept(indices, self._load(indices, need_bytes=False))
            self._check_native(indices, [hw for _, hw, _ in loaded])
            imgs, labels, kept = [], [], []
            for i, (_, _, lab) in zip(indices, loaded):
                sample = self._guard(self._sample, epoch, i, lab)
                if sample is None:
                    continue
                imgs.append(sample[0])
                labels.append(sample[1])
                kept.append(i)
            indices = kept
            if not indices:
                continue  # every image of the batch skipped as unreadable
            out = {"image": torch.from_numpy(np.stack(imgs)),
                   "index": torch.as_tensor(np.asarray(indices, dtype=np.int64))}
            if self.dataset.has_labels:
                out["label"] = torch.from_numpy(np.stack(labels).astype(np.int64))
            if self.device != "cpu":
                out = {k: v.to(self.device) for k, v in out.items()}
            yield out


def loader(dataset, *, batch_size, size=None, train=False, shuffle=False, seed=0, device="cpu", num_threads=2,
           shard_id=0, num_shards=1, normalization="imagenet", scale_range=(0.5, 1.5), flip=True, drop_last=None,
           on_bad_file=None):
    """PIL/NumPy loader with the interface of `lse_fast.data.loader` (test oracle)."""
    return PILLoader(dataset, batch_size=batch_size, size=size, train=train, shuffle=shuffle, seed=seed,
                     device=device, num_threads=num_threads, shard_id=shard_id, num_shards=num_shards,
                     normalization=normalization, scale_range=scale_range, flip=flip, drop_last=drop_last,
                     on_bad_file=on_bad_file)
