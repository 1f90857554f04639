"""Census of bad inputs to the ops (issue 15): one table, one id per case.

Each case calls the public API with one bad argument and asserts an error
that names the argument and says what was expected, or, where the input is
legal but degenerate (NaN/inf values, empty batches, no boxes), the
documented graceful result. docs/reliability.md "Ops" lists these cases.

The second half checks that the one source of truth holds: for every
metadata case the C++ op (eager) and its fake implementation (what
torch.compile runs) raise the same message.
"""

import os
import subprocess
import sys

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from lse_fast import ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAN, INF = float("nan"), float("inf")


def logits(*shape, dtype=torch.float32):
    return torch.randn(shape).to(dtype)


def target(n=1, h=4, w=5, c=3):
    return torch.randint(0, c, (n, h, w))


X = lambda: torch.rand(2, 3, 10, 12)
BOX = lambda: torch.tensor([[0.0, 1, 1, 5, 5]])
P = lambda: torch.softmax(torch.rand(2, 3, 5, 6), 1)
THR = lambda: torch.full((3,), 0.5)


def box(*row):
    return torch.tensor([row], dtype=torch.float32)


def graceful(check):
    """A case that must not raise; `check` asserts the documented result."""
    return ("ok", check)


def _score_nan():
    x = logits(1, 3, 4, 5)
    x[0, 1, 2, 3] = NAN
    s = ops.score(x)
    assert torch.isnan(s.confidence[0, 2, 3]) and torch.isnan(s.entropy[0, 2, 3])
    assert torch.isfinite(s.confidence).sum() == 19


def _score_neg_inf():
    x = logits(1, 3, 4, 5)
    x[0, :2] = -INF  # p = (0, 0, 1) everywhere: confidence 1, entropy 0
    s = ops.score(x)
    assert torch.all(s.confidence == 1) and torch.all(s.entropy == 0) and torch.all(s.label == 2)
    x[0, 2, 0, 0] = -INF  # every class -inf: NaN, as softmax
    s = ops.score(x)
    assert torch.isnan(s.confidence[0, 0, 0]) and torch.isfinite(s.confidence).sum() == 19


def _score_probs_nan():
    p = P()
    p[0, 1, 2, 3] = NAN
    s = ops.score_probs(p)
    assert torch.isnan(s.confidence[0, 2, 3]) and torch.isnan(s.entropy[0, 2, 3])
    assert torch.isfinite(s.confidence).sum() == 2 * 30 - 1


def _score_empty():
    s = ops.score(logits(0, 3, 4, 5))
    assert s.confidence.shape == (0, 4, 5) and s.class_pixels.shape == (0, 3)


def _focal_nan():
    x = logits(2, 19, 16, 24)
    x[0, 7, 3, 5] = NAN
    assert torch.isnan(ops.focal_ce_loss(x, target(2, 16, 24, 19)))


def _focal_weight_nan():
    # A NaN class weight of a present class makes the mean NaN (its divisor is NaN), as F.cross_entropy.
    loss = ops.focal_ce_loss(logits(1, 3, 4, 5), torch.zeros(1, 4, 5, dtype=torch.int64), weight=torch.tensor([NAN, 1.0, 1.0]))
    assert torch.isnan(loss)


def _focal_all_ignored():
    loss = ops.focal_ce_loss(logits(1, 3, 4, 5), torch.full((1, 4, 5), 255))
    assert loss.item() == 0.0


def _crop_no_boxes():
    out = ops.crop_resize(X(), torch.zeros(0, 5), (4, 4))
    assert out.shape == (0, 3, 4, 4)


def _crop_nan_input():
    x = X()
    x[0, 1, 2, 2] = NAN
    out = ops.crop_resize(x, box(0, 0, 0, 12, 10), (10, 12))
    assert torch.isnan(out[0, 1, 2, 2]) and torch.isfinite(out[0, 0]).all()


def _pl_nan_thresholds():
    out = ops.crop_pseudo_labels(P(), BOX(), (4, 4), torch.full((3,), NAN))
    assert torch.all(out == 255)  # e <= NaN is false: every pixel filtered out


# (id, call, expected exception or "ok", regex of the message or a checker)
CASES = [
    # ---- score
    ("score-rank3", lambda: ops.score(logits(19, 8, 8)), RuntimeError,
     r"score: `logits` must have 4 dimensions \[N, C, H, W\], got shape \[19, 8, 8\]"),
    ("score-rank5", lambda: ops.score(logits(1, 2, 3, 4, 5)), RuntimeError, r"`logits` must have 4 dimensions"),
    ("score-int64", lambda: ops.score(torch.zeros(1, 3, 4, 4, dtype=torch.int64)), RuntimeError,
     r"`logits` must be float32, float16 or bfloat16, got torch.int64"),
    ("score-float64", lambda: ops.score(logits(1, 3, 4, 4, dtype=torch.float64)), RuntimeError,
     r"`logits` must be float32, float16 or bfloat16, got torch.float64"),
    ("score-no-classes", lambda: ops.score(logits(1, 0, 4, 4)), RuntimeError,
     r"`logits` must have at least one class \(size\(1\) = C > 0\)"),
    ("score-not-a-tensor", lambda: ops.score([[1.0]]), TypeError, r"`logits` must be a torch.Tensor, got list"),
    ("score-size-zero", lambda: ops.score(logits(1, 3, 4, 4), size=(0, 8)), RuntimeError,
     r"score: `size` must be \(height, width\) with sizes in \[1, 16777216\], got \[0, 8\]"),
    ("score-size-huge", lambda: ops.score(logits(1, 3, 4, 4), size=(1 << 25, 8)), RuntimeError,
     r"`size` must be \(height, width\) with sizes in \[1, 16777216\]"),
    ("score-size-not-a-pair", lambda: ops.score(logits(1, 3, 4, 4), size=8), TypeError,
     r"`size` must be \(height, width\) as two ints, got 8"),
    ("score-nan-logit", _score_nan, *graceful(None)),
    ("score-neg-inf-logits", _score_neg_inf, *graceful(None)),
    ("score-align-corners-not-bool", lambda: ops.score(logits(1, 3, 4, 4), size=(8, 8), align_corners="true"),
     TypeError, r"score: `align_corners` must be a bool, got 'true'"),
    ("score-probs-rank3", lambda: ops.score_probs(P()[0]), RuntimeError,
     r"score_probs: `probs` must have 4 dimensions \[N, C, H, W\], got shape \[3, 5, 6\]"),
    ("score-probs-float64", lambda: ops.score_probs(P().double()), RuntimeError,
     r"score_probs: `probs` must be float32, float16 or bfloat16, got torch.float64"),
    ("score-probs-no-classes", lambda: ops.score_probs(torch.rand(1, 0, 4, 4)), RuntimeError,
     r"score_probs: `probs` must have at least one class"),
    ("score-probs-not-a-tensor", lambda: ops.score_probs(None), TypeError, r"score_probs: `probs` must be a torch.Tensor"),
    ("score-probs-size-zero", lambda: ops.score_probs(P(), size=(0, 8)), RuntimeError,
     r"score_probs: `size` must be \(height, width\) with sizes in \[1, 16777216\], got \[0, 8\]"),
    ("score-probs-align-corners-not-bool", lambda: ops.score_probs(P(), size=(8, 8), align_corners=None), TypeError,
     r"score_probs: `align_corners` must be a bool, got None"),
    ("score-probs-nan", _score_probs_nan, *graceful(None)),
    ("score-empty-batch", _score_empty, *graceful(None)),
    # ---- focal_ce_loss
    ("focal-logits-rank3", lambda: ops.focal_ce_loss(logits(3, 4, 5), target()), RuntimeError,
     r"focal_ce_loss: `logits` must have 4 dimensions \[N, C, H, W\], got shape \[3, 4, 5\]"),
    ("focal-logits-int", lambda: ops.focal_ce_loss(torch.zeros(1, 3, 4, 5, dtype=torch.int32), target()),
     RuntimeError, r"`logits` must be float32, float16, bfloat16 or float64, got torch.int32"),
    ("focal-logits-no-classes", lambda: ops.focal_ce_loss(logits(1, 0, 4, 5), target()), RuntimeError,
     r"`logits` must have at least one class"),
    ("focal-target-rank4", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target()[None]), RuntimeError,
     r"`target` must have 3 dimensions \[N, H, W\], got shape \[1, 1, 4, 5\]"),
    ("focal-target-float", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target().float()), RuntimeError,
     r"`target` must be int64 or uint8, got torch.float32"),
    ("focal-target-shape", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(1, 5, 4)), RuntimeError,
     r"`target` must have shape \[N, H, W\] = \[1, 4, 5\] to match logits \[1, 3, 4, 5\], got \[1, 5, 4\]"),
    ("focal-target-device", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target().to("meta")), RuntimeError,
     r"`target` must be on the same device as logits \(cpu\), got meta"),
    ("focal-gamma-negative", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(), gamma=-1.0), RuntimeError,
     r"`gamma` must be >= 0, got -1$"),
    ("focal-gamma-nan", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(), gamma=NAN), RuntimeError,
     r"`gamma` must be >= 0, got nan"),
    ("focal-reduction-unknown", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(), reduction="avg"),
     RuntimeError, r"`reduction` must be one of \['mean', 'mean_all', 'none', 'sum'\], got 'avg'"),
    ("focal-weight-shape", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(), weight=torch.ones(4)), RuntimeError,
     r"`weight` must be a per-class weight of shape \[C\] = \[3\] to match logits \[1, 3, 4, 5\], got shape \[4\]"),
    ("focal-weight-int", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(), weight=torch.ones(3, dtype=torch.int64)),
     RuntimeError, r"`weight` must be float32, float16, bfloat16 or float64, got torch.int64"),
    ("focal-weight-device", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(), weight=torch.ones(3, device="meta")),
     RuntimeError, r"`weight` must be on the same device as logits \(cpu\), got meta"),
    ("focal-weight-list", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(), weight=[1.0, 2.0, 3.0]), TypeError,
     r"`weight` must be a torch.Tensor, got list"),
    ("focal-pixel-weight-shape", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(), pixel_weight=torch.ones(1, 5, 4)),
     RuntimeError, r"`pixel_weight` must have shape \[N, H, W\] = \[1, 4, 5\] to match logits \[1, 3, 4, 5\], got shape \[1, 5, 4\]"),
    ("focal-pixel-weight-bool", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(), pixel_weight=torch.ones(1, 4, 5, dtype=torch.bool)),
     RuntimeError, r"`pixel_weight` must be float32, float16, bfloat16 or float64, got torch.bool"),
    ("focal-pixel-weight-device", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(), pixel_weight=torch.ones(1, 4, 5, device="meta")),
     RuntimeError, r"`pixel_weight` must be on the same device as logits \(cpu\), got meta"),
    ("focal-ce-weight-inf", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target(), ce_weight=INF), RuntimeError,
     r"`ce_weight` must be a finite number, got inf"),
    ("focal-module-weight-shape", lambda: ops.FocalCELoss(weight=torch.ones(2, 3)), RuntimeError,
     r"`weight` must be a per-class weight of shape \[C\] = \[1\] to match logits \[1, 1, 1, 1\], got shape \[2, 3\]"),
    ("focal-weight-nan", _focal_weight_nan, *graceful(None)),
    ("focal-target-above-classes", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), target().index_fill_(2, torch.tensor([2]), 7)),
     RuntimeError, r"`target` value 7 at flat index 2 is outside \[0, 3\) and is not ignore_index \(255\)"),
    ("focal-target-negative", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), torch.full((1, 4, 5), -1)),
     RuntimeError, r"`target` value -1 at flat index 0 is outside \[0, 3\)"),
    ("focal-ignore-index-mismatch", lambda: ops.focal_ce_loss(logits(1, 3, 4, 5), torch.full((1, 4, 5), 255), ignore_index=-100),
     RuntimeError, r"`target` value 255 at flat index 0 is outside \[0, 3\) and is not ignore_index \(-100\)"),
    ("focal-nan-logit", _focal_nan, *graceful(None)),
    ("focal-all-ignored", _focal_all_ignored, *graceful(None)),
    # ---- crop_resize
    ("crop-input-rank2", lambda: ops.crop_resize(X()[0, 0], BOX(), (4, 4)), RuntimeError,
     r"crop_resize: `input` must have 4 dimensions \[N, C, H, W\] \(\[N, H, W\] is taken by lse_fast.ops.crop_resize\), got shape \[10, 12\]"),
    ("crop-uint8-bilinear", lambda: ops.crop_resize(X().to(torch.uint8), BOX(), (4, 4)), RuntimeError,
     r"`input` must be float32, float16, bfloat16 or float64 for mode='bilinear', got torch.uint8; integer and bool inputs require mode='nearest'"),
    ("crop-int32-nearest", lambda: ops.crop_resize(X().to(torch.int32), BOX(), (4, 4), mode="nearest"), RuntimeError,
     r"`input` must be float32, float16, bfloat16, float64, uint8, bool or int64, got torch.int32"),
    ("crop-mode-unknown", lambda: ops.crop_resize(X(), BOX(), (4, 4), mode="bicubic"), RuntimeError,
     r"`mode` must be 'bilinear' or 'nearest', got 'bicubic'"),
    ("crop-align-corners-not-bool", lambda: ops.crop_resize(X(), BOX(), (4, 4), align_corners=1), TypeError,
     r"`align_corners` must be a bool, got 1"),
    ("crop-empty-image", lambda: ops.crop_resize(torch.rand(1, 3, 0, 5), BOX(), (4, 4)), RuntimeError,
     r"`input` has an empty image, shape \[1, 3, 0, 5\]"),
    ("crop-size-zero", lambda: ops.crop_resize(X(), BOX(), (0, 4)), RuntimeError,
     r"`size` must be \(height, width\) with sizes in \[1, 16777216\], got \[0, 4\]"),
    ("crop-size-huge", lambda: ops.crop_resize(X(), BOX(), (4, 1 << 40)), RuntimeError,
     r"`size` must be \(height, width\) with sizes in \[1, 16777216\], got \[4, 1099511627776\]"),
    ("crop-size-float", lambda: ops.crop_resize(X(), BOX(), (4.0, 4)), TypeError,
     r"`size` must be \(height, width\) as two ints, got \(4.0, 4\)"),
    ("crop-boxes-4-columns", lambda: ops.crop_resize(X(), BOX()[:, :4], (4, 4)), RuntimeError,
     r"`boxes` must have shape \[K, 5\] with rows \(batch_index, x1, y1, x2, y2\), got shape \[1, 4\]"),
    ("crop-boxes-float64", lambda: ops.crop_resize(X(), BOX().double(), (4, 4)), RuntimeError,
     r"`boxes` must be float32, got torch.float64"),
    ("crop-boxes-device", lambda: ops.crop_resize(X(), BOX().to("meta"), (4, 4)), RuntimeError,
     r"`boxes` must be on the CPU or on the input's device \(cpu\), got meta"),
    ("crop-box-batch-index-out-of-range", lambda: ops.crop_resize(X(), box(2, 1, 1, 5, 5), (4, 4)), RuntimeError,
     r"`boxes` row 0: batch index 2 is not an integer in \[0, 2\)"),
    ("crop-box-batch-index-fractional", lambda: ops.crop_resize(X(), box(0.5, 1, 1, 5, 5), (4, 4)), RuntimeError,
     r"`boxes` row 0: batch index 0.5 is not an integer"),
    ("crop-box-empty", lambda: ops.crop_resize(X(), box(0, 5, 1, 5, 5), (4, 4)), RuntimeError,
     r"`boxes` row 0 = \(x1=5, y1=1, x2=5, y2=5\) must satisfy 0 <= x1 < x2 <= 12 and 0 <= y1 < y2 <= 10"),
    ("crop-box-outside", lambda: ops.crop_resize(X(), box(0, 1, 1, 13, 5), (4, 4)), RuntimeError,
     r"0 <= x1 < x2 <= 12 and 0 <= y1 < y2 <= 10 \(inside the 10x12 image\)"),
    ("crop-box-negative", lambda: ops.crop_resize(X(), box(0, 1, -1, 5, 5), (4, 4)), RuntimeError,
     r"`boxes` row 0 = \(x1=1, y1=-1, x2=5, y2=5\) must satisfy"),
    ("crop-box-nan", lambda: ops.crop_resize(X(), box(0, 1, 1, NAN, 5), (4, 4)), RuntimeError,
     r"`boxes` row 0 has a non-finite value"),
    ("crop-box-inf", lambda: ops.crop_resize(X(), box(0, 1, 1, INF, 5), (4, 4)), RuntimeError,
     r"`boxes` row 0 has a non-finite value"),
    ("crop-no-boxes", _crop_no_boxes, *graceful(None)),
    ("crop-nan-input", _crop_nan_input, *graceful(None)),
    # ---- crop_pseudo_labels
    ("pl-probs-rank3", lambda: ops.crop_pseudo_labels(P()[0], BOX(), (4, 4), THR()), RuntimeError,
     r"crop_pseudo_labels: `probs` must have 4 dimensions \[N, C, h, w\], got shape \[3, 5, 6\]"),
    ("pl-probs-int", lambda: ops.crop_pseudo_labels(P().long(), BOX(), (4, 4), THR()), RuntimeError,
     r"`probs` must be float32, float16, bfloat16 or float64, got torch.int64"),
    ("pl-probs-empty", lambda: ops.crop_pseudo_labels(torch.rand(1, 3, 0, 6), BOX(), (4, 4), THR()), RuntimeError,
     r"`probs` must have C, h, w > 0, got shape \[1, 3, 0, 6\]"),
    ("pl-too-many-classes", lambda: ops.crop_pseudo_labels(torch.rand(1, 256, 2, 2), BOX(), (4, 4), torch.ones(256)),
     RuntimeError, r"`probs` has 256 classes; uint8 pseudo-labels hold at most 255"),
    ("pl-thresholds-length", lambda: ops.crop_pseudo_labels(P(), BOX(), (4, 4), torch.ones(4)), RuntimeError,
     r"`thresholds` must be float32 of shape \[C\] = \[3\], got torch.float32 \[4\]"),
    ("pl-thresholds-float64", lambda: ops.crop_pseudo_labels(P(), BOX(), (4, 4), THR().double()), RuntimeError,
     r"`thresholds` must be float32 of shape \[C\] = \[3\], got torch.float64 \[3\]"),
    ("pl-thresholds-device", lambda: ops.crop_pseudo_labels(P(), BOX(), (4, 4), THR().to("meta")), RuntimeError,
     r"`thresholds` must be on the CPU or the device of probs \(cpu\), got meta"),
    ("pl-ignore-index-is-a-class", lambda: ops.crop_pseudo_labels(P(), BOX(), (4, 4), THR(), ignore_index=2),
     RuntimeError, r"`ignore_index` must be in \[C, 255\] = \[3, 255\], got 2"),
    ("pl-ignore-index-256", lambda: ops.crop_pseudo_labels(P(), BOX(), (4, 4), THR(), ignore_index=256),
     RuntimeError, r"`ignore_index` must be in \[C, 255\] = \[3, 255\], got 256"),
    ("pl-align-corners-not-bool", lambda: ops.crop_pseudo_labels(P(), BOX(), (4, 4), THR(), align_corners=1),
     TypeError, r"crop_pseudo_labels: `align_corners` must be a bool, got 1"),
    ("pl-image-size-zero", lambda: ops.crop_pseudo_labels(P(), BOX(), (4, 4), THR(), image_size=(0, 6)),
     RuntimeError, r"`image_size` must be \(height, width\) with sizes in \[1, 16777216\], got \[0, 6\]"),
    ("pl-box-outside-image-size", lambda: ops.crop_pseudo_labels(P(), BOX(), (4, 4), THR(), image_size=(3, 3)),
     RuntimeError, r"must satisfy 0 <= x1 < x2 <= 3 and 0 <= y1 < y2 <= 3"),
    ("pl-nan-thresholds", _pl_nan_thresholds, *graceful(None)),
]


@pytest.mark.parametrize("call,expected,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(call, expected, match):
    if expected == "ok":
        call()
        return
    with pytest.raises(expected, match=match) as info:
        call()
    message = str(info.value)
    assert message.startswith("lse_fast.") and "`" in message, "the error must name the op and the argument"


def test_census_size():
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


# ---- eager (C++) and fake (torch.compile) raise the same message -------------

OPS = torch.ops.lse_fast
C, FC, PL, CB = OPS.score.default, OPS.focal_ce_loss.default, OPS.crop_pseudo_labels.default, OPS.crop_resize_backward.default
CR, SU = OPS.crop_resize.default, OPS.score_upsampled.default
SP, SPU = OPS.score_probs.default, OPS.score_probs_upsampled.default

META_CASES = [
    ("score-rank3", C, lambda: (logits(3, 4, 5),)),
    ("score-dtype", C, lambda: (torch.zeros(1, 3, 4, 5, dtype=torch.int64),)),
    ("score-no-classes", C, lambda: (logits(1, 0, 4, 5),)),
    ("score-upsampled-dtype", SU, lambda: (logits(1, 3, 4, 5, dtype=torch.float64), [8, 10])),
    ("score-upsampled-size", SU, lambda: (logits(1, 3, 4, 5), [8, 0])),
    ("score-upsampled-size-align-corners", SU, lambda: (logits(1, 3, 4, 5), [8, 0], True)),
    ("score-probs-rank3", SP, lambda: (P()[0],)),
    ("score-probs-dtype", SP, lambda: (P().double(),)),
    ("score-probs-upsampled-dtype", SPU, lambda: (P().to(torch.int32), [8, 10], False)),
    ("score-probs-upsampled-size", SPU, lambda: (P(), [8, 0], True)),
    ("focal-logits-rank", FC, lambda: (logits(3, 4, 5), target(), 3.0, 0.1, 255, 1, False)),
    ("focal-logits-dtype", FC, lambda: (torch.zeros(1, 3, 4, 5, dtype=torch.int32), target(), 3.0, 0.1, 255, 1, False)),
    ("focal-target-rank", FC, lambda: (logits(1, 3, 4, 5), target()[0], 3.0, 0.1, 255, 1, False)),
    ("focal-target-dtype", FC, lambda: (logits(1, 3, 4, 5), target().float(), 3.0, 0.1, 255, 1, False)),
    ("focal-target-shape", FC, lambda: (logits(1, 3, 4, 5), target(1, 5, 4), 3.0, 0.1, 255, 1, False)),
    ("focal-gamma", FC, lambda: (logits(1, 3, 4, 5), target(), -0.5, 0.1, 255, 1, False)),
    ("focal-reduction-code", FC, lambda: (logits(1, 3, 4, 5), target(), 3.0, 0.1, 255, 7, False)),
    ("focal-weight-shape", FC, lambda: (logits(1, 3, 4, 5), target(), 3.0, 0.1, 255, 1, False, True, torch.ones(2))),
    ("focal-weight-dtype", FC, lambda: (logits(1, 3, 4, 5), target(), 3.0, 0.1, 255, 1, False, True, torch.ones(3, dtype=torch.int32))),
    ("focal-pixel-weight-shape", FC, lambda: (logits(1, 3, 4, 5), target(), 3.0, 0.1, 255, 3, False, True, None, torch.ones(4, 5))),
    ("focal-ce-weight", FC, lambda: (logits(1, 3, 4, 5), target(), 3.0, 0.1, 255, 1, False, True, None, None, NAN)),
    ("crop-rank", CR, lambda: (torch.rand(3, 10, 12), BOX(), [4, 4], 0, False)),
    ("crop-mode-code", CR, lambda: (X(), BOX(), [4, 4], 2, False)),
    ("crop-bilinear-dtype", CR, lambda: (X().to(torch.uint8), BOX(), [4, 4], 0, False)),
    ("crop-nearest-dtype", CR, lambda: (X().to(torch.int16), BOX(), [4, 4], 1, False)),
    ("crop-empty-image", CR, lambda: (torch.rand(1, 3, 4, 0), BOX(), [4, 4], 0, False)),
    ("crop-size", CR, lambda: (X(), BOX(), [4, -1], 0, False)),
    ("crop-boxes-shape", CR, lambda: (X(), BOX()[:, :3], [4, 4], 0, False)),
    ("crop-boxes-dtype", CR, lambda: (X(), BOX().half(), [4, 4], 0, False)),
    ("crop-backward-input-size", CB, lambda: (torch.rand(1, 3, 4, 4), BOX(), [2, 3, 10], 0, False)),
    ("crop-backward-grad-dtype", CB, lambda: (torch.ones(1, 3, 4, 4, dtype=torch.int32), BOX(), [2, 3, 10, 12], 0, False)),
    ("crop-backward-grad-shape", CB, lambda: (torch.rand(2, 3, 4, 4), BOX(), [2, 3, 10, 12], 0, False)),
    ("pl-rank", PL, lambda: (P()[0], BOX(), [4, 4], THR(), [5, 6], 255)),
    ("pl-dtype", PL, lambda: (P().to(torch.int32), BOX(), [4, 4], THR(), [5, 6], 255)),
    ("pl-classes", PL, lambda: (torch.rand(1, 256, 2, 2), BOX(), [4, 4], torch.ones(256), [5, 6], 255)),
    ("pl-thresholds", PL, lambda: (P(), BOX(), [4, 4], torch.ones(2), [5, 6], 255)),
    ("pl-ignore-index", PL, lambda: (P(), BOX(), [4, 4], THR(), [5, 6], 1)),
    ("pl-size", PL, lambda: (P(), BOX(), [0, 4], THR(), [5, 6], 255)),
    ("pl-image-size", PL, lambda: (P(), BOX(), [4, 4], THR(), [5, 1 << 30], 255)),
    ("pl-boxes-dtype", PL, lambda: (P(), BOX().long(), [4, 4], THR(), [5, 6], 255)),
    ("pl-size-align-corners", PL, lambda: (P(), BOX(), [0, 4], THR(), [5, 6], 255, True)),
]


def _message(fn):
    try:
        fn()
    except RuntimeError as exc:
        return str(exc).split("\n")[0]
    raise AssertionError("no error raised")


@pytest.mark.parametrize("overload,make", [c[1:] for c in META_CASES], ids=[c[0] for c in META_CASES])
def test_eager_and_fake_errors_agree(overload, make):
    args = make()
    eager = _message(lambda: overload(*args))
    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake = _message(lambda: overload(*fake_args))
    assert eager.startswith("lse_fast.")
    assert eager == fake


# ---- the CPU path switch (issue 11) ------------------------------------------


def _isa_in_subprocess(value):
    env = dict(os.environ, LSE_FAST_CPU_ISA=value, PYTHONPATH=ROOT)
    code = "import torch; from lse_fast import ops; print(ops.cpu_isa()); ops.score(torch.randn(1, 3, 4, 4))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, check=False)


def test_cpu_isa_follows_the_environment():
    wanted = os.environ.get("LSE_FAST_CPU_ISA", "")
    assert ops.cpu_isa() in ("avx2", "portable")
    if wanted in ("portable", "avx2"):
        assert ops.cpu_isa() == wanted
    run = _isa_in_subprocess("portable")
    assert run.returncode == 0 and run.stdout.strip() == "portable", run.stderr


def test_cpu_isa_bad_value_is_an_error():
    run = _isa_in_subprocess("sse9")
    assert run.returncode != 0
    assert "LSE_FAST_CPU_ISA must be unset, 'auto', 'portable' or 'avx2', got 'sse9'" in run.stderr
