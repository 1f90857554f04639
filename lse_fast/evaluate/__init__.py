"""Evaluation of segmentation models: :func:`evaluate` (mIoU 19/16/13 over a
labelled loader, optional flip / multi-scale, either upsampling corner
convention) and ``python -m lse_fast.evaluate`` (model + checkpoint + dataset
-> per-class IoU table and JSON, the published protocol: labels at native
resolution, logits upsampled bilinearly to it; ``--export`` writes the
predictions in the official Cityscapes format with
:class:`~lse_fast.evaluate.writer.CityscapesWriter`, ``--predictions``
scores such a tree). See docs/evaluation.md."""

from lse_fast.evaluate.core import SYNTHIA16_NAMES, class_summary, evaluate, format_result, predict, predict_labels
from lse_fast.evaluate.writer import CityscapesWriter, read_predictions

__all__ = ["SYNTHIA16_NAMES", "CityscapesWriter", "class_summary", "evaluate", "format_result", "predict",
           "predict_labels", "read_predictions"]
