"""``python -m lse_fast.evaluate --model M --checkpoint FILE --data KIND:PATH``

Evaluates a checkpoint with the published GTA5/SYNTHIA -> Cityscapes
protocol: labels read at their native resolution (1024x2048 for Cityscapes
val), images fed to the model at ``--input-size`` (default: 512x1024 for
1024x2048 Cityscapes data, as the peers' evaluation scripts, else the data's
native size), logits upsampled bilinearly to the label size. Prints the
per-class IoU table and mIoU 19/16/13, writes them as JSON and, with
--export, the predictions in the official Cityscapes format. With
--predictions DIR it scores a prediction tree instead of a model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from lse_fast import models
from lse_fast.data import CLASS_NAMES, from_spec, loader as dali_loader, to_synthia16
from lse_fast.data.dali import dali_available
from lse_fast.data.pil import loader as pil_loader
from lse_fast.data._base import _image_size
from lse_fast.evaluate.core import class_summary, evaluate, format_result
from lse_fast.evaluate.writer import FORMATS, CityscapesWriter, read_predictions
from lse_fast.metrics import SegmentationMetric

PROG = "python -m lse_fast.evaluate"


class UsageError(ValueError):
    """A bad option, path or file: exit status 2."""


def _size(text):
    parts = str(text).lower().replace("x", ",").split(",")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be HxW (e.g. 512x1024) or 'native', got {text!r}") from None
    return h, w


def _input_size(text):
    if str(text).lower() in ("native", "auto"):
        return str(text).lower()
    return _size(text)


CITYSCAPES_NATIVE = (1024, 2048)
CITYSCAPES_PROTOCOL_INPUT = (512, 1024)  # what the peers' evaluation scripts feed the 1024x2048 val images at


def _scales(text):
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers (e.g. 0.75,1,1.25), got {text!r}") from None
    if not all(v > 0 for v in vals):
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return vals


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--model", help="registered model (deeplab_v2_resnet101, fcn8s_vgg16, "
                   "small_deeplab) or package.module:factory")
    p.add_argument("--checkpoint", help="state dict file (lse_fast's or a community layout)")
    p.add_argument("--predictions", default=None, metavar="DIR",
                   help="score this prediction tree instead of a model (one PNG per image, named "
                        "<city>_<seq>_<frame>*.png as the official evaluator matches, e.g. an --export's DIR/labelIds)")
    p.add_argument("--prediction-encoding", default="labelIds", choices=("labelIds", "trainIds"),
                   help="what the --predictions PNGs hold (default labelIds, the official format)")
    p.add_argument("--data", required=True, metavar="KIND:PATH", help="dataset, e.g. cityscapes:/data/cityscapes")
    p.add_argument("--split", default="val", help="Cityscapes split (default: val)")
    p.add_argument("--num-classes", type=int, default=19, choices=(19, 16),
                   help="19 (Cityscapes trainIds) or 16 (a SYNTHIA head; labels relabelled)")
    p.add_argument("--aspp-branches", default="auto", choices=("auto", "4", "2"),
                   help="DeepLab-v2 ASPP branches summed (auto: 2 for AdaptSegNet/ADVENT-family files, with a warning)")
    p.add_argument("--skip-scale", default="auto", choices=("auto", "none", "atonce"),
                   help="FCN-8s skip scaling (auto: atonce for BDL/LSE-family files, with a warning)")
    p.add_argument("--input-normalization", default=None, choices=("caffe", "imagenet"),
                   help="what the weights expect (default: the model's)")
    p.add_argument("--input-size", type=_input_size, default="auto", metavar="HxW",
                   help="size the images are fed at: HxW, 'native' (the label size) or 'auto' (default: 512x1024 "
                        "for 1024x2048 Cityscapes data, as the published protocol, else native)")
    p.add_argument("--train-size", type=_size, default=None, metavar="HxW",
                   help="the model's training input size, to state a mismatch with --input-size (default: read "
                        "from an lse_fast run checkpoint's config; unknown for other files)")
    p.add_argument("--align-corners", action="store_true",
                   help="upsample the logits with align_corners=True (ADVENT's eval_UDA.py, AdaptSegNet-era "
                        "scripts on PyTorch < 0.4); default False (the official protocol, mmsegmentation, ours)")
    p.add_argument("--scales", type=_scales, default=(1.0,), help="input scales, e.g. 0.75,1,1.25 (default 1)")
    p.add_argument("--flip", action="store_true", help="also evaluate the flipped images (softmax summed)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    p.add_argument("--loader", default="auto", choices=("auto", "dali", "pil"),
                   help="auto: DALI when installed, else PIL")
    p.add_argument("--num-threads", type=int, default=2, help="loader threads")
    p.add_argument("--json", default=None, metavar="FILE", help="write the result here (default: print only)")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="write the predictions in the official Cityscapes format: DIR/labelIds/<city>/<image>.png "
                        "(what cityscapesscripts' evaluator reads) and DIR/color/... (docs/evaluation.md)")
    p.add_argument("--export-train-ids", action="store_true", help="--export also writes DIR/trainIds/...")
    p.add_argument("--overwrite", action="store_true",
                   help="let --export replace an earlier export and --json an existing file")
    return p


def _device(spec):
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"{PROG}: --device must be auto, cpu, cuda or cuda:N, got {spec!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{PROG}: --device {spec}: torch sees no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"{PROG}: --device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    return dev


def _model(args):
    kwargs = {"aspp_branches": None if args.aspp_branches == "auto" else int(args.aspp_branches),
              "skip_scale": None if args.skip_scale == "auto" else args.skip_scale,
              "input_normalization": args.input_normalization}
    try:
        kwargs = {k: v for k, v in models.factory_options(args.model, kwargs).items() if v is not None}
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.input_normalization is not None and "input_normalization" not in kwargs:
        raise UsageError(f"{PROG}: --input-normalization: model {args.model!r} does not take it")
    model = models.build(args.model, num_classes=args.num_classes, **kwargs)
    try:
        missing, _ = models.load_checkpoint(model, args.checkpoint)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        raise UsageError(f"{PROG}: --checkpoint {args.checkpoint!r}: {e}") from None
    if missing:
        raise UsageError(f"{PROG}: --checkpoint {args.checkpoint!r} leaves {len(missing)} model tensors unset "
                         f"(e.g. {', '.join(missing[:4])}); evaluating it would score random weights")
    return model


def _checkpoint_train_size(path):
    """image_size of an lse_fast run checkpoint's config (None for other files)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (load_checkpoint reports an unreadable file)
        return None
    cfg = state.get("config") if isinstance(state, dict) else None
    size = cfg.get("image_size") if isinstance(cfg, dict) else None
    return tuple(int(v) for v in size) if isinstance(size, (list, tuple)) and len(size) == 2 else None


def resolve_input_size(spec, dataset):
    """(input size or None for native, the rule that chose it) for --input-size
    `spec` on `dataset`: 'auto' gives 512x1024 for 1024x2048 labels (the
    Cityscapes protocol) and native otherwise."""
    if spec not in ("native", "auto"):
        return tuple(spec), "--input-size"
    native = _image_size(dataset.label_path(0))
    if spec == "native":
        return None, f"native (--input-size native; {native[0]}x{native[1]} for the first image)"
    if tuple(native) == CITYSCAPES_NATIVE:
        return CITYSCAPES_PROTOCOL_INPUT, "auto: Cityscapes protocol (1024x2048 labels fed at 512x1024)"
    return None, f"auto: native size of the data, {native[0]}x{native[1]} for the first image"


def _dataset(args):
    try:
        dataset = from_spec(args.data, split=args.split)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise UsageError(f"{PROG}: --data {args.data!r}: {e}") from None
    if not dataset.has_labels:
        raise UsageError(f"{PROG}: --data {args.data!r} split {args.split!r} has no labels")
    if args.num_classes == 16:
        to_synthia16(dataset)
    return dataset


def _check_outputs(args):
    if args.json is not None and Path(args.json).is_dir():
        raise UsageError(f"{PROG}: --json {args.json!r} is a directory")
    if args.json is not None and Path(args.json).exists() and not args.overwrite:
        raise UsageError(f"{PROG}: --json {args.json!r} exists; give another file or --overwrite")
    if args.export_train_ids and args.export is None:
        raise UsageError(f"{PROG}: --export-train-ids needs --export DIR")
    if args.export is None:
        return None
    if args.predictions is not None:
        raise UsageError(f"{PROG}: --export writes a model's predictions; with --predictions there is no model")
    formats = FORMATS if args.export_train_ids else FORMATS[:2]
    try:
        return CityscapesWriter(args.export, num_classes=args.num_classes, formats=formats, overwrite=args.overwrite,
                                option="--export")
    except (FileExistsError, ValueError) as e:
        raise UsageError(f"{PROG}: {e}") from None


def _protocol(args, input_size, rule, train_size, native):
    return {"labels": "native resolution", "input_size": input_size, "input_size_rule": rule,
            "native_size": native,
            "train_size": train_size, "scales": list(args.scales), "flip": args.flip,
            "align_corners": bool(args.align_corners),
            "upsampling": f"bilinear, align_corners={bool(args.align_corners)}",
            "fusion": "argmax of logits" if len(args.scales) == 1 and not args.flip else "summed softmax"}


def _result(args, res, protocol):
    return {
        "model": args.model, "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
        "predictions": args.predictions, "data": args.data, "split": args.split, "protocol": protocol,
        "num_classes": args.num_classes, "per_class_iou": res["per_class"], "miou": res["miou"],
        "miou16": res["miou16"], "miou13": res["miou13"], "pixel_accuracy": res["pixel_accuracy"],
        "confusion": res["confusion"].tolist(), "num_images": res["num_images"], "seconds": res["seconds"],
    }


def score_predictions(args):
    """(JSON-ready result, scores) of the prediction tree --predictions
    against the labels of --data; a missing, extra, duplicate or wrong-size
    PNG is a UsageError naming the file. Scored as the official evaluator
    does: in the 19 trainIds, a pixel predicted as a void id counts for no
    class (neither a hit nor a miss); with --num-classes 16 the labels of
    terrain, truck and train are ignored, as for a 16-class model."""
    import time

    from lse_fast.data._base import read_label
    from lse_fast.metrics import SYNTHIA_16, iou_from_confusion

    num_classes, args.num_classes = args.num_classes, 19
    try:
        dataset = _dataset(args)  # labels in the 19 trainIds
    finally:
        args.num_classes = num_classes
    start = time.perf_counter()
    metric = SegmentationMetric(20)  # 19 classes + one column for void predictions
    keep = np.full(256, 255, np.int64)
    for c in (SYNTHIA_16 if num_classes == 16 else range(19)):
        keep[c] = c
    try:
        for i, ids in read_predictions(args.predictions, dataset, encoding=args.prediction_encoding,
                                       sizes=lambda i: _image_size(dataset.label_path(i))):
            pred = torch.from_numpy(np.where(ids == 255, 19, ids).astype(np.int64))
            label = torch.from_numpy(keep[read_label(dataset, i)])
            metric.update(pred, label)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(f"{PROG}: --predictions {args.predictions!r}: {e}") from None
    confusion = metric.confusion[:19, :19]
    iou = iou_from_confusion(confusion)
    names = list(CLASS_NAMES)
    if num_classes == 16:
        iou, names = [iou[c] for c in SYNTHIA_16], [names[c] for c in SYNTHIA_16]
        confusion = confusion[list(SYNTHIA_16)][:, list(SYNTHIA_16)]
    res = {"iou": iou, "per_class": dict(zip(names, iou)), "confusion": confusion, "num_images": len(dataset),
           "pixel_accuracy": float(confusion.diagonal().sum()) / max(1, int(confusion.sum()))}
    res["miou"], res["miou16"], res["miou13"] = class_summary(iou)
    res["seconds"] = time.perf_counter() - start
    protocol = {"labels": "native resolution", "predictions": str(args.predictions),
                "encoding": args.prediction_encoding, "void_predictions": "count for no class (as the official "
                "evaluator)"}
    return _result(args, res, protocol), res


def run(args):
    """(JSON-ready result, evaluate()'s result) for parsed `args`; every
    option, path and the checkpoint checked before the first image."""
    if args.predictions is not None:
        if args.model is not None or args.checkpoint is not None:
            raise UsageError(f"{PROG}: give --predictions DIR or --model and --checkpoint, not both")
        _check_outputs(args)
        return score_predictions(args)
    if args.model is None or args.checkpoint is None:
        raise UsageError(f"{PROG}: give --model and --checkpoint (or --predictions DIR)")
    if not Path(args.checkpoint).is_file():
        raise UsageError(f"{PROG}: --checkpoint {args.checkpoint!r} does not exist")
    if args.batch_size < 1:
        raise UsageError(f"{PROG}: --batch-size must be positive, got {args.batch_size}")
    device = _device(args.device)
    if args.amp and device.type != "cuda":
        raise UsageError(f"{PROG}: --amp is bfloat16 autocast on CUDA; on the CPU it is many times slower, "
                         "leave it out there")
    dataset = _dataset(args)
    model = _model(args).to(device)
    input_size, rule = resolve_input_size(args.input_size, dataset)
    train_size = tuple(args.train_size) if args.train_size else _checkpoint_train_size(args.checkpoint)
    writer = _check_outputs(args)
    kind = args.loader
    if kind == "auto":
        kind = "dali" if dali_available() else "pil"
    make = dali_loader if kind == "dali" else pil_loader
    loader = make(dataset, batch_size=args.batch_size, size=None, device="cpu", num_threads=args.num_threads,
                  normalization=model.input_normalization)
    on_prediction = None
    if writer is not None:
        def on_prediction(batch, pred):
            writer.write_batch([dataset.image_path(i) for i in batch["index"].tolist()], pred)
    res = evaluate(model, loader, num_classes=args.num_classes, class_names=list(dataset.class_names)
                   if len(dataset.class_names) == args.num_classes else None, device=device,
                   autocast=torch.bfloat16 if args.amp else False, progress=True,
                   input_size=input_size, scales=args.scales, flip=args.flip, align_corners=args.align_corners,
                   on_prediction=on_prediction)
    return _result(args, res, _protocol(args, input_size, rule, train_size,
                                                     _image_size(dataset.label_path(0)))), res


def size_note(protocol) -> str:
    """One line on the input size against the model's training size."""
    size, train = protocol.get("input_size"), protocol.get("train_size")
    shown = "native" if size is None else "x".join(map(str, size))
    if size is None:
        size = protocol.get("native_size")  # (of the first image)
    if train is None:
        return f"input {shown} ({protocol['input_size_rule']}); the model's training size is unknown " \
               "(give --train-size to check it)"
    train_s = "x".join(map(str, train))
    if size is not None and tuple(size) == tuple(train):
        return f"input {shown} ({protocol['input_size_rule']}) = the model's training size"
    return f"note: input {shown} ({protocol['input_size_rule']}) differs from the model's training size {train_s}"


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(argv=None) -> dict:
    """Runs the evaluation in-process; returns the JSON-ready result."""
    args = build_parser().parse_args(argv)
    out, res = run(args)
    print(format_result(res))
    proto = out["protocol"]
    if args.predictions is not None:
        print(f"{out['num_images']} predictions of {args.predictions} ({args.prediction_encoding}), labels at "
              "native resolution")
    else:
        print(f"{out['num_images']} images, {out['seconds']:.1f} s; labels at native resolution, scales "
              f"{','.join(f'{s:g}' for s in args.scales)}{', flip' if args.flip else ''}, {proto['upsampling']}")
        print(size_note(proto))
    if args.export:
        print(f"exported {out['num_images']} predictions to {args.export} (labelIds/ for the official evaluator: "
              f"CITYSCAPES_RESULTS={Path(args.export) / 'labelIds'})")
    if args.json:
        Path(args.json).write_text(json.dumps(_json_safe(out), indent=1))
        print(f"written {args.json}")
    return out


def cli(argv=None) -> int:
    shown = warnings.showwarning
    warnings.showwarning = lambda m, c, f, n, file=None, line=None: print(f"warning: {m}", file=sys.stderr)
    try:
        main(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = shown
    return 0
