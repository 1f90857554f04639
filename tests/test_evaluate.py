"""lse_fast.evaluate.evaluate: bilinear upsampling to the label size before
argmax, batches as dicts or pairs, autocast, training mode restored, errors."""

import math

import numpy as np

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lse_fast.evaluate import evaluate, format_result, predict
from lse_fast.metrics import CITYSCAPES_CLASSES, SegmentationMetric

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (pure PyTorch: no lse_fast CUDA kernels involved)"
)


class Stride4(nn.Module):
    """Logits at a quarter of the input size, with a BatchNorm and a Dropout
    that behave differently in train mode."""

    output_stride = 4
    input_normalization = "imagenet"

    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 5, stride=4, padding=2)
        self.bn = nn.BatchNorm2d(num_classes)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.conv(x)))

def make_loader(num_classes, sizes=((2, 37, 51), (1, 37, 51), (3, 20, 33)), seed=0):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for n, h, w in sizes:
        label = torch.randint(0, num_classes, (n, h, w), generator=g)
        label[torch.rand(n, h, w, generator=g) < 0.1] = 255
        batches.append({"image": torch.randn(n, 3, h, w, generator=g), "label": label, "index": torch.arange(n)})
    return batches


def expected(model, loader, num_classes, mode="bilinear"):
    metric = SegmentationMetric(num_classes)
    model.eval()
    with torch.no_grad():
        for b in loader:
            logits = model(b["image"])
            kw = {"align_corners": False} if mode == "bilinear" else {}
            up = F.interpolate(logits, size=b["label"].shape[-2:], mode=mode, **kw)
            metric.update(up.argmax(1), b["label"])
    return metric


def test_matches_manual_bilinear_evaluation():
    torch.manual_seed(0)
    model = Stride4(19)
    loader = make_loader(19)
    model.train()
    got = evaluate(model, loader)
    assert model.training and model.drop.training  # restored
    want = expected(model, loader, 19)
    assert torch.equal(got["confusion"], want.confusion)
    nearest = expected(model, loader, 19, mode="nearest")
    assert not torch.equal(got["confusion"], nearest.confusion)  # the upsampling is bilinear
    ref = want.compute()
    for key in ("miou", "miou16", "miou13", "pixel_accuracy"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12)
    assert list(got["per_class"]) == list(CITYSCAPES_CLASSES)
    assert [got["per_class"][n] for n in CITYSCAPES_CLASSES] == pytest.approx(got["iou"], nan_ok=True)
    assert got["num_images"] == 6
    assert "road" in format_result(got) and "miou13" in format_result(got)
    model.eval()
    evaluate(model, loader)
    assert not model.training


def test_pairs_and_class_names_and_no_grad():
    model = Stride4(3)
    loader = [(b["image"], b["label"]) for b in make_loader(3)]
    got = evaluate(model, loader, num_classes=3, class_names=["a", "b", "c"])
    assert list(got["per_class"]) == ["a", "b", "c"]
    assert math.isnan(got["miou16"]) and math.isnan(got["miou13"])
    assert all(p.grad is None for p in model.parameters())
    assert list(evaluate(model, loader, num_classes=3)["per_class"]) == ["class_0", "class_1", "class_2"]


def test_autocast_bfloat16_on_cpu_close_to_float32():
    torch.manual_seed(1)
    model = Stride4(5)
    loader = make_loader(5)
    full = evaluate(model, loader, num_classes=5)
    with pytest.warns(RuntimeWarning, match="autocast on the CPU .* slower"):
        half = evaluate(model, loader, num_classes=5, autocast=True)
    # bf16 logits may flip near-ties only
    assert abs(full["pixel_accuracy"] - half["pixel_accuracy"]) < 0.02
    # an explicit dtype is used as given (the driver passes its training dtype)
    with pytest.warns(RuntimeWarning, match="autocast on the CPU"):
        same = evaluate(model, loader, num_classes=5, autocast=torch.bfloat16)
    assert same["confusion"].tolist() == half["confusion"].tolist()


def test_predict_upsamples_in_float32():
    logits = torch.randn(2, 4, 5, 7, dtype=torch.bfloat16)
    pred = predict(logits, (19, 27))
    want = F.interpolate(logits.float(), size=(19, 27), mode="bilinear", align_corners=False).argmax(1)
    assert torch.equal(pred, want)
    assert torch.equal(predict(logits, (5, 7)), logits.float().argmax(1))


def test_errors():
    model = Stride4(4)
    loader = make_loader(4)
    with pytest.raises(ValueError, match="no 'label'"):
        evaluate(model, [{"image": loader[0]["image"]}], num_classes=4)
    with pytest.raises(ValueError, match=r"logits of shape \[2, 4, 10, 13\].*num_classes=19"):
        evaluate(model, loader)
    with pytest.raises(ValueError, match="class_names"):
        evaluate(model, loader, num_classes=4, class_names=["x"])
    with pytest.raises(ValueError, match="yielded no batch"):
        evaluate(model, [], num_classes=4)
    with pytest.raises(ValueError, match="must return one logits tensor"):
        evaluate(lambda_model(), loader, num_classes=4)
    model.train()
    with pytest.raises(ValueError):
        evaluate(model, loader)
    assert model.training  # restored after an error too


def lambda_model():
    class Pair(Stride4):
        def forward(self, x):
            out = super().forward(x)
            return out, out

    return Pair(4)


@needs_cuda
def test_cuda_matches_cpu():
    torch.manual_seed(2)
    model = Stride4(19).eval()
    loader = make_loader(19)
    cpu = evaluate(model, loader)
    gpu = evaluate(model.cuda(), loader)  # batches moved to the model's device
    assert (gpu["confusion"] - cpu["confusion"]).abs().sum() <= 10  # conv rounding may flip a near-tie
    gpu16 = evaluate(model, loader, autocast=True)
    assert abs(gpu16["pixel_accuracy"] - cpu["pixel_accuracy"]) < 0.02


def test_bad_batches():
    model = Stride4(4)
    with pytest.raises(ValueError, match=r"'image' of batch 0 must be a \[N, 3, H, W\] tensor, got shape \[3, 8, 8\]"):
        evaluate(model, [{"image": torch.zeros(3, 8, 8), "label": torch.zeros(1, 8, 8, dtype=torch.long)}], num_classes=4)
    with pytest.raises(ValueError, match=r"'label' of batch 0 must be a \[N, H, W\] tensor matching the 2 images"):
        evaluate(model, [{"image": torch.zeros(2, 3, 8, 8), "label": torch.zeros(8, 8, dtype=torch.long)}], num_classes=4)
    with pytest.raises(ValueError, match="must yield dicts"):
        evaluate(model, [torch.zeros(2, 3, 8, 8)], num_classes=4)


# --------------------------------------------------------------- python -m lse_fast.evaluate


class HalfSplit(nn.Module):
    """Ignores the image: logits [N, 19, 2, 4] from one parameter (stride 2
    on a 4x8 image), set by the checkpoint to class 0 on the left two
    columns and class 1 on the right two."""

    output_stride = 2
    input_normalization = "imagenet"

    def __init__(self, num_classes=19):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(1, num_classes, 2, 4))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1, -1, -1) + 0 * x.mean()


def half_split(num_classes=19):
    return HalfSplit(num_classes)


def half_split_checkpoint(path):
    """Saves the checkpoint that makes HalfSplit predict class 0 on the left
    half and class 1 on the right half; returns its path."""
    model = HalfSplit()
    with torch.no_grad():
        model.logits[0, 0, :, :2] = 10.0
        model.logits[0, 1, :, 2:] = 10.0
    torch.save(model.state_dict(), path)
    return path


def test_cli_scores_native_labels_against_a_hand_computed_confusion(tmp_path, capsys):
    import json

    from PIL import Image

    from lse_fast.evaluate.cli import cli, main

    # two val images of 4x8 with labelTrainIds written by hand
    rows = {"a": [0, 0, 0, 1, 1, 1, 1, 1], "b": [2, 2, 2, 2, 2, 2, 255, 1]}
    for stem, row in rows.items():
        d = tmp_path / "cs" / "leftImg8bit" / "val" / "x"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 8, 3), 128, np.uint8)).save(d / f"x_{stem}_0_leftImg8bit.png")
        g = tmp_path / "cs" / "gtFine" / "val" / "x"
        g.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.array([row] * 4, np.uint8), mode="L").save(g / f"x_{stem}_0_gtFine_labelTrainIds.png")
    ckpt = half_split_checkpoint(tmp_path / "half.pth")
    # Upsampled bilinearly 4 -> 8 columns, output columns 0-3 read class 0, 4-7 class 1 (column 3 reads
    # 0.75 of source column 1 and 0.25 of column 2, column 4 the reverse). By hand, rows = labels:
    #   image a: label 0 -> pred 0: 3 cols x 4 rows = 12; label 1 -> pred 0: 4; label 1 -> pred 1: 16
    #   image b: label 2 -> pred 0: 16; label 2 -> pred 1: 8; label 1 -> pred 1: 4; 255 ignored
    want = np.zeros((19, 19), np.int64)
    want[0, 0], want[1, 0], want[1, 1], want[2, 0], want[2, 1] = 12, 4, 16 + 4, 16, 8
    out = main(["--model", "tests.test_evaluate:half_split", "--checkpoint", str(ckpt), "--data",
                f"cityscapes:{tmp_path / 'cs'}", "--input-size", "native", "--loader", "pil", "--device", "cpu",
                "--batch-size", "2", "--json", str(tmp_path / "r.json")])
    assert np.array_equal(np.array(out["confusion"]), want)
    # IoU 0: 12 / (12 + 32 - 12); IoU 1: 20 / (24 + 28 - 20); IoU 2: 0 / 24; others absent
    assert out["per_class_iou"]["road"] == pytest.approx(12 / 32)
    assert out["per_class_iou"]["sidewalk"] == pytest.approx(20 / 32)
    assert out["per_class_iou"]["building"] == 0.0
    assert out["miou"] == pytest.approx((12 / 32 + 20 / 32) / 3)
    assert out["miou16"] == pytest.approx(out["miou"]) and out["miou13"] == pytest.approx(out["miou"])
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk["per_class_iou"]["wall"] is None and on_disk["confusion"] == want.tolist()
    text = capsys.readouterr().out
    assert "road" in text and "miou" in text and "labels at native resolution" in text
    # flip of an image-independent left/right split mirrors it: the summed softmax ties exactly (a + b
    # against b + a) and argmax takes the first class
    flipped = main(["--model", "tests.test_evaluate:half_split", "--checkpoint", str(ckpt), "--data",
                    f"cityscapes:{tmp_path / 'cs'}", "--input-size", "native", "--loader", "pil", "--flip"])
    assert np.array(flipped["confusion"])[:, 1].sum() == 0
    # bad options: exit 2 with one line
    assert cli(["--model", "fcn8s_vgg16", "--checkpoint", str(tmp_path / "none.pth"), "--data", "cityscapes:/x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["--model", "tests.test_evaluate:half_split", "--checkpoint", str(ckpt), "--data",
                f"cityscapes:{tmp_path / 'nowhere'}"]) == 2
    assert "--data" in capsys.readouterr().err


def test_multi_scale_and_flip_of_a_pointwise_model_agree_with_one_pass():
    torch.manual_seed(2)
    model = nn.Conv2d(3, 5, 1)  # pointwise: flip-equivariant, and the same at every scale up to resampling
    loader = [{"image": torch.randn(2, 3, 8, 12), "label": torch.randint(0, 5, (2, 8, 12))}]
    one = evaluate(model, loader, num_classes=5)
    both = evaluate(model, loader, num_classes=5, flip=True, scales=(1.0, 1.0))
    assert torch.equal(one["confusion"], both["confusion"])
    with pytest.raises(ValueError, match="`scales` must be"):
        evaluate(model, loader, num_classes=5, scales=(0.0,))
    with pytest.raises(ValueError, match="`input_size` must be"):
        evaluate(model, loader, num_classes=5, input_size=(8,))


def test_sixteen_class_heads_report_miou16_and_13():
    from lse_fast.evaluate import class_summary

    iou = [0.5] * 16
    iou[3] = iou[4] = iou[5] = 0.0  # wall, fence, pole: not among the 13
    miou, m16, m13 = class_summary(iou)
    assert miou == m16 == pytest.approx(6.5 / 16) and m13 == pytest.approx(0.5)
