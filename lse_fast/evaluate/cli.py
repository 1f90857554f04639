"""``python -m lse_fast.evaluate --model M --checkpoint FILE --data KIND:PATH``

Evaluates a checkpoint with the published GTA5/SYNTHIA -> Cityscapes
protocol: labels read at their native resolution (1024x2048 for Cityscapes
val), images fed to the model at ``--input-size`` (default 512x1024, as the
peers' evaluation scripts), logits upsampled bilinearly to the label size.
Prints the per-class IoU table and mIoU 19/16/13, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import torch

from lse_fast import models
from lse_fast.data import from_spec, loader as dali_loader, to_synthia16
from lse_fast.data.dali import dali_available
from lse_fast.data.pil import loader as pil_loader
from lse_fast.evaluate.core import evaluate, format_result

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
    return None if str(text).lower() == "native" else _size(text)


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
    p.add_argument("--model", required=True, help="registered model (deeplab_v2_resnet101, fcn8s_vgg16, "
                   "small_deeplab) or package.module:factory")
    p.add_argument("--checkpoint", required=True, help="state dict file (lse_fast's or a community layout)")
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
    p.add_argument("--input-size", type=_input_size, default=(512, 1024), metavar="HxW",
                   help="size the images are fed at (default 512x1024; 'native' for the label size)")
    p.add_argument("--scales", type=_scales, default=(1.0,), help="input scales, e.g. 0.75,1,1.25 (default 1)")
    p.add_argument("--flip", action="store_true", help="also evaluate the flipped images (softmax summed)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    p.add_argument("--loader", default="auto", choices=("auto", "dali", "pil"),
                   help="auto: DALI when installed, else PIL")
    p.add_argument("--num-threads", type=int, default=2, help="loader threads")
    p.add_argument("--json", default=None, metavar="FILE", help="write the result here (default: print only)")
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


def run(args):
    """(JSON-ready result, evaluate()'s result) for parsed `args`; every
    option, path and the checkpoint checked before the first image."""
    if not Path(args.checkpoint).is_file():
        raise UsageError(f"{PROG}: --checkpoint {args.checkpoint!r} does not exist")
    if args.batch_size < 1:
        raise UsageError(f"{PROG}: --batch-size must be positive, got {args.batch_size}")
    if args.json is not None and Path(args.json).is_dir():
        raise UsageError(f"{PROG}: --json {args.json!r} is a directory")
    device = _device(args.device)
    if args.amp and device.type != "cuda":
        raise UsageError(f"{PROG}: --amp is bfloat16 autocast on CUDA; on the CPU it is many times slower, "
                         "leave it out there")
    try:
        dataset = from_spec(args.data, split=args.split)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise UsageError(f"{PROG}: --data {args.data!r}: {e}") from None
    if not dataset.has_labels:
        raise UsageError(f"{PROG}: --data {args.data!r} split {args.split!r} has no labels")
    if args.num_classes == 16:
        to_synthia16(dataset)
    model = _model(args).to(device)
    kind = args.loader
    if kind == "auto":
        kind = "dali" if dali_available() else "pil"
    make = dali_loader if kind == "dali" else pil_loader
    loader = make(dataset, batch_size=args.batch_size, size=None, device="cpu", num_threads=args.num_threads,
                  normalization=model.input_normalization)
    res = evaluate(model, loader, num_classes=args.num_classes, class_names=list(dataset.class_names)
                   if len(dataset.class_names) == args.num_classes else None, device=device,
                   autocast=torch.bfloat16 if args.amp else False, progress=True,
                   input_size=args.input_size, scales=args.scales, flip=args.flip)
    return {
        "model": args.model, "checkpoint": str(args.checkpoint), "data": args.data, "split": args.split,
        "protocol": {"labels": "native resolution", "input_size": args.input_size, "scales": list(args.scales),
                     "flip": args.flip, "upsampling": "bilinear, align_corners=False",
                     "fusion": "argmax of logits" if len(args.scales) == 1 and not args.flip else "summed softmax"},
        "num_classes": args.num_classes, "per_class_iou": res["per_class"], "miou": res["miou"],
        "miou16": res["miou16"], "miou13": res["miou13"], "pixel_accuracy": res["pixel_accuracy"],
        "confusion": res["confusion"].tolist(), "num_images": res["num_images"], "seconds": res["seconds"],
    }, res


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
    print(f"{out['num_images']} images, {out['seconds']:.1f} s; labels at native resolution, input "
          f"{'native' if args.input_size is None else 'x'.join(map(str, args.input_size))}, scales "
          f"{','.join(f'{s:g}' for s in args.scales)}{', flip' if args.flip else ''}")
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
