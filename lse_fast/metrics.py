"""Segmentation metrics: a confusion matrix accumulated with one bincount per
batch, per-class IoU and the mIoU over 19, 16 and 13 classes used in
GTA5/SYNTHIA -> Cityscapes adaptation.

Conventions (those of the published evaluations):

* The confusion matrix has rows = ground truth, columns = prediction.
* Pixels whose target equals ``ignore_index`` are left out.
* IoU_c = TP / (TP + FP + FN). A class with TP + FP + FN = 0 (absent from
  both prediction and ground truth) has IoU NaN and is excluded from every
  mean, not counted as 0.
* ``miou16`` drops trainIds {9 terrain, 14 truck, 16 train} (the 16 classes
  SYNTHIA shares with Cityscapes); ``miou13`` also drops {3 wall, 4 fence,
  5 pole}. Both are defined for 19-class models only (NaN otherwise).
"""

import math

import torch

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
"""The 19 Cityscapes evaluation classes, by trainId."""

SYNTHIA_16 = tuple(c for c in range(19) if c not in (9, 14, 16))
"""trainIds of the 16 classes evaluated for SYNTHIA -> Cityscapes."""

SYNTHIA_13 = tuple(c for c in SYNTHIA_16 if c not in (3, 4, 5))
"""trainIds of the 13 classes evaluated for SYNTHIA -> Cityscapes (mIoU*)."""

_NAME = "lse_fast.metrics.SegmentationMetric"


def _nanmean(values):
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def iou_from_confusion(confusion):
    """Per-class IoU (list of floats, NaN where the union is 0) of a [C, C]
    confusion matrix with rows = ground truth, columns = prediction."""
    conf = torch.as_tensor(confusion).detach().to("cpu", torch.float64)
    tp = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    return [float(v) for v in iou]


def scores_from_confusion(confusion):
    """The dict `SegmentationMetric.compute` returns, for a given confusion matrix."""
    conf = torch.as_tensor(confusion).detach().to("cpu")
    num_classes = conf.shape[0]
    iou = iou_from_confusion(conf)
    total = int(conf.sum())
    out = {
        "iou": iou,
        "miou": _nanmean(iou),
        "miou16": _nanmean([iou[c] for c in SYNTHIA_16]) if num_classes == 19 else float("nan"),
        "miou13": _nanmean([iou[c] for c in SYNTHIA_13]) if num_classes == 19 else float("nan"),
        "pixel_accuracy": float(conf.diagonal().sum()) / total if total else float("nan"),
    }
    return out


class SegmentationMetric:
    """Accumulates a confusion matrix over batches of label maps.

    Args:
        num_classes: number of classes C (>= 1).
        ignore_index: target value to leave out (default 255).

    ``update(pred, target)`` takes integer tensors of the same shape (any
    number of leading dimensions, e.g. [N, H, W]) on CPU or GPU; the matrix
    lives on the device of the first update. ``compute()`` returns Python
    floats: ``iou`` (list of C, NaN for a class absent from prediction and
    ground truth), ``miou``, ``miou16``, ``miou13`` (fractions in [0, 1]) and
    ``pixel_accuracy``. ``merge(other)`` adds another metric's matrix (for
    evaluation split across processes; with torch.distributed, all_reduce
    ``metric.confusion`` instead).
    """

    def __init__(self, num_classes, ignore_index=255):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"{_NAME}: `num_classes` must be a positive int, got {num_classes!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"{_NAME}: `ignore_index` must be an int, got {ignore_index!r}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"{_NAME}: `ignore_index` ({ignore_index}) must not be a class index in [0, {num_classes})"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._confusion = None

    @property
    def confusion(self):
        """int64 [C, C] confusion matrix, rows = ground truth, columns = prediction."""
        if self._confusion is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        return self._confusion

    @confusion.setter
    def confusion(self, value):
        value = torch.as_tensor(value)
        c = self.num_classes
        if tuple(value.shape) != (c, c):
            raise ValueError(f"{_NAME}: `confusion` must have shape [{c}, {c}], got {list(value.shape)}")
        self._confusion = value.to(torch.int64).clone()

    def reset(self):
        self._confusion = None

    def update(self, pred, target):
        """Adds one batch: `pred` and `target` integer tensors of the same shape."""
        for name, value in (("pred", pred), ("target", target)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{_NAME}.update: `{name}` must be a torch.Tensor, got {type(value).__name__}")
            if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
                raise ValueError(
                    f"{_NAME}.update: `{name}` must be an integer tensor of class indices, got {value.dtype}"
                    + (" (pass logits.argmax(1), not the logits)" if name == "pred" else "")
                )
        if pred.shape != target.shape:
            raise ValueError(
                f"{_NAME}.update: `pred` and `target` must have the same shape, got "
                f"{list(pred.shape)} and {list(target.shape)}"
            )
        if pred.device != target.device:
            raise ValueError(
                f"{_NAME}.update: `pred` and `target` must be on the same device, got {pred.device} and {target.device}"
            )
        if pred.numel() == 0:
            return
        c = self.num_classes
        pred = pred.reshape(-1).long()
        target = target.reshape(-1).long()
        valid = target != self.ignore_index
        pmin, pmax = torch.aminmax(pred)
        tmin, tmax = torch.aminmax(torch.where(valid, target, 0))
        pmin, pmax, tmin, tmax = (int(v) for v in torch.stack([pmin, pmax, tmin, tmax]).cpu())
        if pmin < 0 or pmax >= c:
            bad = pmin if pmin < 0 else pmax
            raise ValueError(f"{_NAME}.update: `pred` has value {bad} outside [0, {c}) (num_classes={c})")
        if tmin < 0 or tmax >= c:
            bad = tmin if tmin < 0 else tmax
            raise ValueError(
                f"{_NAME}.update: `target` has value {bad} that is neither in [0, {c}) nor "
                f"ignore_index={self.ignore_index}"
            )
        # One bincount; ignored pixels go to the extra bin c*c, which is dropped.
        index = torch.where(valid, target * c + pred, c * c)
        counts = torch.bincount(index, minlength=c * c + 1)[: c * c].view(c, c)
        if self._confusion is None:
            self._confusion = counts
        else:
            self._confusion += counts.to(self._confusion.device)

    def merge(self, other):
        """Adds the confusion matrix of another metric with the same classes."""
        if not isinstance(other, SegmentationMetric):
            raise TypeError(f"{_NAME}.merge: `other` must be a SegmentationMetric, got {type(other).__name__}")
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"{_NAME}.merge: `other` has num_classes={other.num_classes}, ignore_index={other.ignore_index}; "
                f"expected {self.num_classes}, {self.ignore_index}"
            )
        if other._confusion is None:
            return self
        if self._confusion is None:
            self._confusion = other._confusion.clone()
        else:
            self._confusion += other._confusion.to(self._confusion.device)
        return self

    def compute(self):
        """{"iou": [C floats, NaN for absent classes], "miou", "miou16", "miou13",
        "pixel_accuracy"} as Python floats in [0, 1]."""
        return scores_from_confusion(self.confusion)
