"""Data for lse_fast: datasets (Cityscapes, GTA5, SYNTHIA, image folders),
the NVIDIA DALI loader, the PIL oracle loader (`lse_fast.data.pil`) and the
built-in synthetic domain-shift benchmark (`lse_fast.data.synthetic`).

Nothing here imports DALI until a loader is created.
"""

from __future__ import annotations

import torch

from lse_fast.data._base import CAFFE_MEAN_BGR, IMAGENET_MEAN, IMAGENET_STD, UnreadableFile
from lse_fast.data.datasets import (
    CITYSCAPES_ID_TO_TRAINID,
    CLASS_NAMES,
    GTA5,
    IGNORE_INDEX,
    NUM_CLASSES,
    SYNTHIA,
    SYNTHIA16_TRAIN_IDS,
    TRAIN_ID_COLORS,
    SYNTHIA_ID_TO_TRAINID,
    Cityscapes,
    ImageFolderPairs,
    SegmentationDataset,
    from_spec,
    to_synthia16,
)


def loader(dataset, *, batch_size, size=None, train=False, shuffle=False, seed=0, device="cpu", num_threads=2,
           shard_id=0, num_shards=1, normalization="imagenet", scale_range=(0.5, 1.5), flip=True, drop_last=None,
           on_bad_file=None):
    """A re-iterable DALI loader over `dataset`; see README "Data".

    Yields {"image": float32 [B,3,H,W], "label": int64 [B,H,W] (if the
    dataset has labels), "index": int64 [B]} on `device`. `len()` is the
    number of batches per epoch; every `iter()` runs the next epoch (a new
    permutation when shuffle=True, deterministic from `seed`). An image or
    label that cannot be decoded raises an error naming the file; with
    ``on_bad_file`` (a callable(path, message)) it is reported there and
    skipped (its batch is smaller).
    """
    from lse_fast.data.dali import DaliLoader

    return DaliLoader(dataset, batch_size=batch_size, size=size, train=train, shuffle=shuffle, seed=seed,
                      device=device, num_threads=num_threads, shard_id=shard_id, num_shards=num_shards,
                      normalization=normalization, scale_range=scale_range, flip=flip, drop_last=drop_last,
                      on_bad_file=on_bad_file)


def denormalize(image, normalization="imagenet"):
    """float [B,3,H,W] normalised image -> uint8 [B,H,W,3] RGB (for plots)."""
    from lse_fast.data._base import normalization_constants

    order, mean, std = normalization_constants(normalization)
    if not torch.is_tensor(image) or image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"lse_fast.data.denormalize: `image` must be a [B,3,H,W] tensor, got "
                         f"{tuple(image.shape) if torch.is_tensor(image) else type(image).__name__}")
    x = image.detach().float().cpu()
    x = x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    if order == "BGR":
        x = x.flip(1)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


__all__ = [
    "CAFFE_MEAN_BGR", "CITYSCAPES_ID_TO_TRAINID", "CLASS_NAMES", "GTA5", "IGNORE_INDEX", "IMAGENET_MEAN",
    "IMAGENET_STD", "NUM_CLASSES", "SYNTHIA", "SYNTHIA16_TRAIN_IDS", "SYNTHIA_ID_TO_TRAINID", "TRAIN_ID_COLORS",
    "Cityscapes", "ImageFolderPairs", "SegmentationDataset", "UnreadableFile", "denormalize", "from_spec", "loader",
    "to_synthia16",
]
