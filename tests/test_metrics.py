"""lse_fast.metrics.SegmentationMetric against a naive per-class count and
hand-made cases."""

import math

import numpy as np
import pytest
import torch

from lse_fast.metrics import SYNTHIA_13, SYNTHIA_16, SegmentationMetric, iou_from_confusion

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (pure PyTorch: no lse_fast CUDA kernels involved)"
)


def naive_iou(preds, targets, num_classes, ignore_index=255):
    """IoU per class from explicit per-class pixel counts (NaN if the union is empty)."""
    tp = np.zeros(num_classes)
    fp = np.zeros(num_classes)
    fn = np.zeros(num_classes)
    for pred, target in zip(preds, targets):
        p = pred.numpy().ravel()
        t = target.numpy().ravel()
        keep = t != ignore_index
        p, t = p[keep], t[keep]
        for c in range(num_classes):
            tp[c] += np.sum((p == c) & (t == c))
            fp[c] += np.sum((p == c) & (t != c))
            fn[c] += np.sum((p != c) & (t == c))
    union = tp + fp + fn
    return [tp[c] / union[c] if union[c] > 0 else math.nan for c in range(num_classes)]


def nanmean(values):
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def assert_iou_equal(got, want):
    assert len(got) == len(want)
    for c, (g, w) in enumerate(zip(got, want)):
        if math.isnan(w):
            assert math.isnan(g), f"class {c}: expected NaN (absent), got {g}"
        else:
            assert g == pytest.approx(w, abs=1e-12), f"class {c}: got {g}, expected {w}"


def random_batch(shape, num_classes, ignore_share=0.2, absent=(), generator=None):
    target = torch.randint(0, num_classes, shape, generator=generator)
    pred = torch.where(
        torch.rand(shape, generator=generator) < 0.6, target, torch.randint(0, num_classes, shape, generator=generator)
    )
    for c in absent:  # remove class c from both prediction and ground truth
        target[target == c] = (c + 1) % num_classes
        pred[pred == c] = (c + 1) % num_classes
    target[torch.rand(shape, generator=generator) < ignore_share] = 255
    return pred, target


@pytest.mark.parametrize("num_classes", [19, 7, 1])
def test_matches_naive_on_random_batches(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    metric = SegmentationMetric(num_classes)
    preds, targets = [], []
    absent = (4, 16) if num_classes == 19 else ()
    for shape in [(2, 31, 47), (1, 64, 65), (3, 5, 7)]:
        pred, target = random_batch(shape, num_classes, absent=absent, generator=g)
        pred = pred.to(torch.uint8) if num_classes < 256 else pred  # any integer dtype
        metric.update(pred, target)
        preds.append(pred.long())
        targets.append(target)
    want = naive_iou(preds, targets, num_classes)
    got = metric.compute()
    assert_iou_equal(got["iou"], want)
    assert got["miou"] == pytest.approx(nanmean(want), abs=1e-12)
    if num_classes == 19:
        assert math.isnan(got["iou"][4]) and math.isnan(got["iou"][16])
        assert got["miou16"] == pytest.approx(nanmean([want[c] for c in SYNTHIA_16]), abs=1e-12)
        assert got["miou13"] == pytest.approx(nanmean([want[c] for c in SYNTHIA_13]), abs=1e-12)
    else:
        assert math.isnan(got["miou16"]) and math.isnan(got["miou13"])
    for key in ("miou", "pixel_accuracy"):
        assert isinstance(got[key], float) and 0.0 <= got[key] <= 1.0


def test_class_subsets():
    assert len(SYNTHIA_16) == 16 and not {9, 14, 16} & set(SYNTHIA_16)
    assert len(SYNTHIA_13) == 13 and not {3, 4, 5, 9, 14, 16} & set(SYNTHIA_13)


def test_perfect_prediction():
    target = torch.randint(0, 19, (2, 40, 60))
    target[:, :5] = 255
    metric = SegmentationMetric(19)
    metric.update(target.clone().clamp(max=18), target)
    got = metric.compute()
    assert got["iou"] == [1.0] * 19
    assert got["miou"] == got["miou16"] == got["miou13"] == got["pixel_accuracy"] == 1.0


def test_hand_made_case():
    # 2 classes, ignore at one pixel: target [0 0 1 1 255], pred [0 1 1 1 0]
    target = torch.tensor([[0, 0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0]])
    metric = SegmentationMetric(3)
    metric.update(pred, target)
    assert metric.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    got = metric.compute()
    assert got["iou"][0] == pytest.approx(1 / 2)  # tp 1, fn 1
    assert got["iou"][1] == pytest.approx(2 / 3)  # tp 2, fp 1
    assert math.isnan(got["iou"][2])  # absent from both: excluded from the mean, not 0
    assert got["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert got["pixel_accuracy"] == pytest.approx(3 / 4)


def test_predicted_but_absent_from_ground_truth_counts_as_zero():
    metric = SegmentationMetric(3)
    metric.update(torch.tensor([0, 2]), torch.tensor([0, 0]))
    got = metric.compute()
    assert got["iou"][2] == 0.0 and math.isnan(got["iou"][1])
    assert got["miou"] == pytest.approx((0.5 + 0.0) / 2)


def test_all_ignored_and_empty():
    metric = SegmentationMetric(4)
    metric.update(torch.zeros(2, 3, dtype=torch.long), torch.full((2, 3), 255))
    metric.update(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    got = metric.compute()
    assert all(math.isnan(v) for v in got["iou"]) and math.isnan(got["miou"])
    assert int(metric.confusion.sum()) == 0


def test_merge_and_reset():
    g = torch.Generator().manual_seed(3)
    a, b, whole = SegmentationMetric(19), SegmentationMetric(19), SegmentationMetric(19)
    for i in range(4):
        pred, target = random_batch((2, 16, 16), 19, generator=g)
        (a if i % 2 else b).update(pred, target)
        whole.update(pred, target)
    merged = SegmentationMetric(19).merge(a).merge(b)
    assert torch.equal(merged.confusion, whole.confusion)
    assert merged.compute() == pytest.approx(whole.compute(), nan_ok=True)
    merged.reset()
    assert int(merged.confusion.sum()) == 0
    with pytest.raises(ValueError, match="num_classes"):
        merged.merge(SegmentationMetric(16))


def test_iou_from_confusion():
    assert_iou_equal(iou_from_confusion(torch.tensor([[3, 1], [0, 0]])), [0.75, 0.0])


def test_bad_input():
    metric = SegmentationMetric(5)
    with pytest.raises(ValueError, match="`pred` has value 5"):
        metric.update(torch.tensor([5]), torch.tensor([0]))
    with pytest.raises(ValueError, match="`pred` has value -1"):
        metric.update(torch.tensor([-1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="`target` has value 7"):
        metric.update(torch.tensor([0]), torch.tensor([7]))
    with pytest.raises(ValueError, match="same shape"):
        metric.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="`pred` must be an integer tensor"):
        metric.update(torch.zeros(2, 5, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationMetric(0)
    with pytest.raises(ValueError, match="ignore_index"):
        SegmentationMetric(19, ignore_index=3)
    assert int(metric.confusion.sum()) == 0  # nothing half-added


@needs_cuda
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(5)
    pred, target = random_batch((2, 64, 64), 19, generator=g)
    cpu, gpu = SegmentationMetric(19), SegmentationMetric(19)
    cpu.update(pred, target)
    gpu.update(pred.cuda(), target.cuda())
    assert gpu.confusion.is_cuda
    assert torch.equal(gpu.confusion.cpu(), cpu.confusion)
    assert gpu.compute() == pytest.approx(cpu.compute(), nan_ok=True)
