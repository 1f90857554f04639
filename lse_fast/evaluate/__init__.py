"""Evaluation of segmentation models: :func:`evaluate` (mIoU 19/16/13 over a
labelled loader, optional flip / multi-scale) and ``python -m
lse_fast.evaluate`` (model + checkpoint + dataset -> per-class IoU table and
JSON, the published protocol: labels at native resolution, logits
upsampled bilinearly to it)."""

from lse_fast.evaluate.core import SYNTHIA16_NAMES, class_summary, evaluate, format_result, predict, predict_labels

__all__ = ["SYNTHIA16_NAMES", "class_summary", "evaluate", "format_result", "predict", "predict_labels"]
