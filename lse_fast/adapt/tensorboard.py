"""--tensorboard: the round's scalars and sample patches with their
pseudo-labels, written beside metrics.json under <run_dir>/tensorboard.
Needs the ``tensorboard`` package (checked with the options, before the run
directory is written)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import torch

from lse_fast.adapt.config import ConfigError
from lse_fast.adapt.export import TRAIN_ID_PALETTE, to_train_ids
from lse_fast.data import denormalize

TENSORBOARD_INSTALL = "pip install tensorboard"


def check_available() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"lse_fast.adapt: --tensorboard needs the tensorboard package, which is not installed "
                          f"({TENSORBOARD_INSTALL}); or leave --tensorboard out (metrics.json has every number)")


class TensorBoardLog:
    def __init__(self, directory):
        check_available()
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when asked for

        self.writer = SummaryWriter(log_dir=str(directory))

    def _scalar(self, tag, value, step):
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            self.writer.add_scalar(tag, float(value), step)

    def source_only(self, so):
        for key in ("miou", "miou19", "miou16", "miou13"):
            self._scalar(f"eval/{key}", so.get(key), 0)
        self.writer.flush()

    def round(self, entry, examples, classes, normalization, num_classes):
        r = entry["round"]
        for key in ("miou", "miou19", "miou16", "miou13"):
            self._scalar(f"eval/{key}", entry.get(key), r)
        self._scalar("round/loss", entry["loss"], r)
        self._scalar("round/selected", entry["selected"], r)
        self._scalar("round/portion", entry["portion"], r)
        th = [entry["thresholds"][c] for c in classes]
        th = [t for t in th if t is not None and not math.isnan(t)]
        if th:
            self._scalar("round/mean_threshold", sum(th) / len(th), r)
        for stage, sec in entry["seconds"].items():
            self._scalar(f"seconds/{stage}", sec, r)
        for j, (patch, label) in enumerate(examples):
            image = denormalize(patch.unsqueeze(0), normalization)[0].numpy()
            colour = TRAIN_ID_PALETTE[to_train_ids(label, num_classes)]
            both = np.concatenate([image, colour], axis=1)  # patch | pseudo-label
            self.writer.add_image(f"pseudo_labels/{j}", torch.from_numpy(both), r, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()
