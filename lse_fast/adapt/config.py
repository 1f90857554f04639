"""The one configuration object of the driver, its presets, YAML file and
command-line parser (generated from the dataclass fields; every field's help
text is its ``metadata["help"]``).

Precedence, lowest first: field defaults < ``--preset`` < ``--config FILE``
(YAML) < command-line options.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from lse_fast.selection import portions as portion_schedule


class ConfigError(ValueError):
    """A bad option, option combination, path or file given to the driver:
    the command line answers it with one line and exit status 2 before
    anything is written."""


def _f(default, help, **kw):
    return field(default=default, metadata={"help": help, **kw})


class Problems:
    """Every problem found in the options, reported together: one
    ConfigError listing all of them (each in the words it would have alone)."""

    PREFIX = "lse_fast.adapt: "

    def __init__(self):
        self.messages = []
        self.fields = set()

    def add(self, message: str, field_name: typing.Optional[str] = None) -> None:
        """A problem (of `field_name`: only its first one is kept)."""
        if field_name is not None:
            if field_name in self.fields:
                return
            self.fields.add(field_name)
        self.messages.append(message[len(self.PREFIX):] if message.startswith(self.PREFIX) else message)

    def catch(self, fn, *args):
        """fn(*args), or None with its ConfigError recorded."""
        try:
            return fn(*args)
        except ConfigError as e:
            self.add(str(e))
            return None

    def raise_if_any(self) -> None:
        if len(self.messages) == 1:
            raise ConfigError(self.PREFIX + self.messages[0])
        if self.messages:
            raise ConfigError(f"{self.PREFIX}{len(self.messages)} problems with the options:\n"
                              + "\n".join(f"  - {m}" for m in self.messages))


class _Check:
    """The checks of one group of fields; `bad` records "`name` must be ..."."""

    def __init__(self, cfg, problems: Problems):
        self.cfg = cfg
        self.problems = problems

    def bad(self, name, what):
        self.problems.add(f"`{name}` must be {what}, got {getattr(self.cfg, name)!r}", name)

    def add(self, message, name=None):
        self.problems.add(message, name)

    def at_least(self, low, what, *names):
        for name in names:
            if getattr(self.cfg, name) < low:
                self.bad(name, what)

    def file(self, name, what):
        v = getattr(self.cfg, name)
        if v is not None and not Path(v).is_file():
            self.add(f"`{name}` {what} {v!r} does not exist", name)


@dataclass
class AdaptConfig:
    """Configuration of an LSE run (``python -m lse_fast.adapt``), grouped by
    the step of Algorithm 1 it configures; each group's checks follow it.

    Defaults are the built-in synthetic benchmark sized for a 2-core CPU;
    ``--preset paper-gta5-deeplab`` (and the other ``paper-*`` presets) set
    the paper's hyperparameters for real data.
    """

    # === data: the two domains and how they are read =======================================
    source: str = _f(
        "synthetic",
        "source domain: 'synthetic' (the built-in benchmark) or KIND:PATH with KIND gta5, synthia, "
        "cityscapes or folder (labelled)",
    )
    target: str = _f(
        "synthetic",
        "target domain: 'synthetic' or KIND:PATH (e.g. cityscapes:/data/cityscapes); its 'train' split "
        "is adapted to (labels unused), its 'val' split evaluated",
    )
    label_size_mismatch: str = _f(
        "resize",
        "a source label whose size differs from its image (a few GTA5 pairs): 'resize' it (nearest) with a "
        "warning naming the file, 'skip' the pair (headers read at start, one warning listing them) or 'error'",
        choices=("resize", "skip", "error"),
    )
    image_size: typing.Tuple[int, int] = _f(
        (256, 512), "target image size HxW: scoring, patches (resized back to it) and evaluation"
    )
    source_size: typing.Tuple[int, int] = _f((256, 512), "source image size HxW for the source CE batch")
    synthetic_source: int = _f(200, "synthetic benchmark: source images")
    synthetic_train: int = _f(160, "synthetic benchmark: target train images")
    synthetic_val: int = _f(40, "synthetic benchmark: target val images")
    loader: str = _f(
        "dali",
        "image loader: 'dali' (NVIDIA DALI; when it is not installed the run falls back to 'pil' with one "
        "warning) or 'pil' (PIL/NumPy on the CPU, slower, no DALI needed)",
        choices=("dali", "pil"),
    )
    loader_device: str = _f(
        "auto",
        "where the loader decodes and resizes: 'auto' (the model's device) or 'cpu' (e.g. DALI on the CPU "
        "while the model runs on the GPU; batches are copied to the model's device)",
        choices=("auto", "cpu"),
    )
    num_threads: int = _f(2, "loader worker threads")
    skip_bad_files: bool = _f(
        False,
        "skip an image or label that cannot be decoded (logged once, listed in metrics.json 'skipped_files' "
        "and counted at the end) instead of stopping the run with an error naming the file",
    )

    def _check_data(self, c: _Check):
        for name in ("image_size", "source_size"):
            v = getattr(self, name)
            if len(v) != 2 or min(v) < 2:
                c.bad(name, "two sizes H, W of at least 2")
        c.at_least(0, "a non-negative integer", "synthetic_source")
        c.at_least(1, "a positive integer", "synthetic_train", "synthetic_val", "num_threads")
        for name in ("source", "target"):
            v = getattr(self, name)
            if v == "synthetic":
                continue
            kind, _, path = v.partition(":")
            if ":" not in v:
                c.bad(name, "'synthetic' or KIND:PATH (e.g. cityscapes:/data/cityscapes)")
            elif kind not in ("gta5", "synthia", "cityscapes", "folder"):
                c.bad(name, "'synthetic' or KIND:PATH with KIND one of gta5, synthia, cityscapes, folder")
            elif not path:
                c.bad(name, "KIND:PATH with a non-empty PATH")
            elif not Path(path).exists():
                c.add(f"`{name}` path {path!r} does not exist", name)
        if (self.source == "synthetic") != (self.target == "synthetic"):
            c.add("`source` and `target` must both be 'synthetic' or both be KIND:PATH, "
                  f"got source={self.source!r}, target={self.target!r}")

    # === model and theta_0 (Algorithm 1's input) ============================================
    model: str = _f(
        "small_deeplab",
        "model: a registered name (small_deeplab, deeplab_v2_resnet101, fcn8s_vgg16) or package.module:factory",
    )
    num_classes: int = _f(
        19, "output classes: 19 (Cityscapes trainIds) or 16 (a SYNTHIA head: the 16 shared classes, in trainId "
        "order; labels are relabelled and mIoU16/13 reported)"
    )
    aspp_branches: str = _f(
        "auto",
        "DeepLab-v2 ASPP branches summed: '4' (all), '2' (the early-return layout the AdaptSegNet/ADVENT-family "
        "checkpoints were trained with) or 'auto' (2 for such a checkpoint, with a warning; else 4)",
        choices=("auto", "4", "2"),
    )
    skip_scale: str = _f(
        "auto",
        "FCN-8s skip scaling: 'none', 'atonce' (pool4 * 0.01, pool3 * 0.0001, caffe FCN-8s at-once as the "
        "BDL/LSE checkpoints) or 'auto' (atonce for such a checkpoint, with a warning; else none)",
        choices=("auto", "none", "atonce"),
    )
    init: typing.Optional[str] = _f(
        None,
        "checkpoint of the source-trained model to start from; without one the model is trained on the "
        "source first (cached under cache_dir, keyed by its configuration)",
    )

    def _check_model(self, c: _Check):
        if self.num_classes not in (19, 16):
            c.bad("num_classes", "19 (Cityscapes trainIds) or 16 (SYNTHIA's 16 classes)")
        c.file("init", "checkpoint")

    # === source stage: theta_0 trained here (only without --init) ===========================
    backbone: typing.Optional[str] = _f(
        None,
        "ImageNet-initialised backbone file for the source stage (torchvision or caffe key layout of ResNet-101 "
        "for deeplab_v2_resnet101, VGG16 for fcn8s_vgg16); the head starts as initialised. Needed by the paper "
        "models when no --init is given",
    )
    backbone_normalization: str = _f(
        "auto",
        "input normalization the --backbone weights expect: 'auto' (torchvision layout -> imagenet, caffe layout "
        "-> caffe), 'imagenet' or 'caffe'",
        choices=("auto", "imagenet", "caffe"),
    )
    pretrain_iters: int = _f(600, "source-only training steps when no --init is given")
    pretrain_optimizer: str = _f(
        "adam", "optimiser of the source-only training: 'adam' or 'sgd' (the paper presets: the peers' SGD recipe)",
        choices=("adam", "sgd"),
    )
    pretrain_lr: float = _f(2e-3, "learning rate of the source-only training (poly 0.9 decay over pretrain_iters)")
    pretrain_momentum: float = _f(0.9, "source-only training: SGD momentum / Adam beta1")
    pretrain_weight_decay: float = _f(0.0, "source-only training: weight decay")
    pretrain_head_lr_mult: float = _f(1.0, "source-only training: learning-rate factor of the classifier head")
    pretrain_batch_size: int = _f(8, "batch size of the source-only training")
    pretrain_color_aug: bool = _f(
        True,
        "photometric augmentation of the source-only training (random per-image channel gains, offsets and "
        "desaturation on the normalised images)",
    )
    source_model: str = _f(
        "auto",
        "where theta_0 comes from without --init: 'auto' (the model shipped in lse_fast/assets when every option "
        "that determines it equals the built-in benchmark's default, else trained here and cached), 'shipped' "
        "(that model; an error naming the options that differ) or 'train' (always trained here, cached)",
        choices=("auto", "shipped", "train"),
    )

    def _check_source_stage(self, c: _Check):
        c.at_least(0, "a non-negative integer", "pretrain_iters")
        c.at_least(1, "a positive integer", "pretrain_batch_size")
        for name in ("pretrain_lr", "pretrain_head_lr_mult"):
            if getattr(self, name) <= 0:
                c.bad(name, "positive")
        c.file("backbone", "file")
        if self.source_model == "shipped" and self.init is not None:
            c.add("give --init (a source-trained model) or --source-model shipped (the packaged one), not both")
        if self.backbone is not None and self.init is not None:
            c.add("give --init (a source-trained model: no source stage) or --backbone (ImageNet weights: the "
                  "source stage trains the model first), not both")

    # === rounds, steps 1-2: scoring and selection (paper Sections 3.2-3.4) ==================
    portion_start: float = _f(0.1, "portion p of the first round (paper 0.1)")
    portion_step: float = _f(0.05, "increment of p per round (paper 0.05)")
    portion_stop: float = _f(0.4, "last portion (paper: rounds stop once p > 0.4, i.e. 7 rounds)")
    rounds: typing.Optional[int] = _f(
        None, "number of rounds (default: every portion from portion_start to portion_stop)"
    )
    share_rounding: str = _f(
        "ceil", "per-class share len(images predicting c) * p / C rounded 'ceil' (>= 1 image) or 'floor'",
        choices=("ceil", "floor"),
    )
    threshold_image: str = _f(
        "last_selected",
        "image h_c is taken from: 'last_selected' (paper) or 'first_unselected' (authors' code)",
        choices=("last_selected", "first_unselected"),
    )
    entropy_norm: str = _f(
        "log_c",
        "entropy normalisation: 'log_c' (paper, fused ops) or 'minmax' (authors' code: per image and "
        "predicted class, 0 where constant; pure-PyTorch pseudo-labels)",
        choices=("log_c", "minmax"),
    )
    score_batch_size: int = _f(8, "images per batch when scoring and evaluating")
    probs_ram_budget: float = _f(
        2.0,
        "GiB of host RAM for the probability maps of candidate images kept while scoring (FCN-8s maps are at "
        "full resolution: 40 MB per 512x1024 image); beyond it no map is kept and the selected images' maps are "
        "recomputed when making patches, by a frozen copy of the round's starting model (0: always recompute)",
    )

    def _check_selection(self, c: _Check):
        if not (0.0 < self.portion_start <= 1.0):
            c.bad("portion_start", "in (0, 1]")
        if self.portion_step <= 0:
            c.bad("portion_step", "positive")
        if not (self.portion_start <= self.portion_stop <= 1.0):
            c.bad("portion_stop", "in [portion_start, 1]")
        if self.rounds is not None and self.rounds < 1:
            c.bad("rounds", "a positive integer or none")
        c.at_least(1, "a positive integer", "score_batch_size")
        if self.probs_ram_budget < 0:
            c.bad("probs_ram_budget", ">= 0 (GiB)")

    # === step 3: patches and pseudo-labels (paper Sections 3.4-3.5) =========================
    patches_per_image: int = _f(4, "k random patches per selected image (paper 4)")
    patch_scale: float = _f(
        0.5, "patch side as a fraction of the image side (paper 0.5: 256x512 patches of 512x1024 images)"
    )
    filter_interp: str = _f(
        "nearest",
        "resizing of the filter map into a patch: 'nearest' (faithful for a mask) or 'bilinear' "
        "(authors' code, kept where > 0, which dilates the kept region; pure-PyTorch pseudo-labels)",
        choices=("nearest", "bilinear"),
    )

    def _check_patches(self, c: _Check):
        c.at_least(1, "a positive integer", "patches_per_image")
        if not (0.0 < self.patch_scale <= 1.0):
            c.bad("patch_scale", "in (0, 1]")

    # === step 4: training (paper Sections 3.5-3.6) ==========================================
    epochs: float = _f(2.0, "epochs over the patches per round (fractions allowed)")
    batch_size: int = _f(8, "target patches per step (paper code: 1)")
    source_batch_size: int = _f(4, "source images per step for the CE term (0: no source term)")
    source_weight: float = _f(1.0, "weight of the source CE term (paper 1)")
    gamma: float = _f(3.0, "focal loss gamma (paper 3)")
    beta: float = _f(0.1, "focal loss weight beta (paper 0.1)")
    optimizer: str = _f("adam", "optimiser: 'adam' (paper) or 'sgd'", choices=("adam", "sgd"))
    lr: float = _f(1e-4, "learning rate (paper 1e-6 with Adam on pretrained networks)")
    momentum: float = _f(0.9, "Adam beta1 / SGD momentum (paper 0.9)")
    weight_decay: float = _f(0.0, "weight decay")
    freeze_bn: bool = _f(
        True,
        "BatchNorm layers keep and use their running statistics while self-training (as DeepLab-v2 "
        "fine-tuning does); otherwise the upscaled patches shift them",
    )
    lr_schedule: str = _f(
        "constant", "'constant' or 'poly' (power 0.9 over each round's steps)", choices=("constant", "poly")
    )

    def _check_training(self, c: _Check):
        if self.epochs <= 0:
            c.bad("epochs", "positive")
        c.at_least(1, "a positive integer", "batch_size")
        c.at_least(0, "a non-negative integer", "source_batch_size")
        if self.lr <= 0:
            c.bad("lr", "positive")
        if self.gamma < 0:
            c.bad("gamma", ">= 0")

    # === step 5: evaluation ==================================================================
    eval_size: str = _f(
        "native",
        "evaluation protocol: 'native' (the published one: labels at their native resolution, images fed at "
        "image_size, logits upsampled bilinearly to the labels; a val batch needs images of one size) or 'train' "
        "(labels resized to image_size: a shortcut, identical for the built-in data)",
        choices=("native", "train"),
    )
    eval_align_corners: bool = _f(
        False,
        "upsample the logits to the labels with align_corners=True, as ADVENT's eval_UDA.py (and AdaptSegNet-era "
        "scripts on PyTorch < 0.4) do; default False, the official protocol (docs/evaluation.md)",
    )
    oracle: bool = _f(
        False,
        "also train the oracle: the same model and source-stage budget trained on the target train split's labels "
        "(needs them, as the built-in benchmark has), evaluated like the rounds; metrics.json 'oracle' and the "
        "report's performance gap (paper Table 3)",
    )

    # === execution: ops, device, seed ========================================================
    ops: str = _f(
        "fused", "'fused' (lse_fast.ops) or 'reference' (pure PyTorch, for A/B timing)", choices=("fused", "reference")
    )
    verify: bool = _f(
        False,
        "check every fused op against its reference on live batches; record the largest deviations in "
        "metrics.json and fail beyond tolerance",
    )
    device: str = _f("auto", "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'")
    amp: bool = _f(False, "bfloat16 autocast for forward passes on CUDA")
    seed: int = _f(0, "random seed (CPU runs are deterministic)")

    def _check_execution(self, c: _Check):
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            c.bad("device", "auto, cpu, cuda or cuda:N")
        elif self.device.startswith("cuda") and not torch.cuda.is_available():
            c.add(f"`device` is {self.device!r} but torch sees no CUDA device (use --device cpu or auto)", "device")
        elif self.device.startswith("cuda:"):
            try:
                index = int(self.device.split(":", 1)[1])
            except ValueError:
                index = -1
            if not 0 <= index < torch.cuda.device_count():
                c.bad("device", f"cuda:N with N in [0, {torch.cuda.device_count()})")
        if self.verify and self.ops != "fused":
            c.add("--verify compares the fused ops with the reference; use it with --ops fused, "
                  f"got --ops {self.ops}")

    # === the run directory and what is written ===============================================
    run_dir: typing.Optional[str] = _f(None, "run directory (default runs/<timestamp> in the current directory)")
    cache_dir: typing.Optional[str] = _f(
        None, "synthetic data and cached source models (default $LSE_FAST_HOME or ~/.cache/lse_fast)"
    )
    keep_checkpoints: str = _f(
        "all", "'all' round checkpoints or only the 'last'", choices=("all", "last")
    )
    plots: bool = _f(True, "write PNG plots into the run directory")
    export: bool = _f(
        False,
        "write each round's pseudo-labels (export/round_<r>/pseudo_labels) and the final predictions on the val "
        "split (export/predictions) in the official Cityscapes format: labelIds/, color/ and trainIds/ folders of "
        "<city>/<image name>.png (docs/evaluation.md)",
    )
    tensorboard: bool = _f(
        False, "log scalars and sample images to TensorBoard under <run_dir>/tensorboard (needs the tensorboard "
        "package)"
    )
    progress: bool = _f(True, "progress bars")


    def _check_outputs(self, c: _Check):
        for name in ("cache_dir", "run_dir"):
            v = getattr(self, name)
            if v is not None and Path(v).exists() and not Path(v).is_dir():
                c.add(f"`{name}` {v!r} exists and is not a directory", name)

    # ========================================================================================
    def validate(self, problems: typing.Optional[Problems] = None) -> "AdaptConfig":
        """Checks every field and every combination of fields; touches no
        file (paths are only tested for existence). Raises one ConfigError
        listing every problem (with those already in `problems`)."""
        problems = Problems() if problems is None else problems
        c = _Check(self, problems)
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                c.bad(f.name, f"one of {', '.join(choices)}")
        for check in (self._check_data, self._check_model, self._check_source_stage, self._check_selection,
                      self._check_patches, self._check_training, self._check_execution, self._check_outputs):
            check(c)
        problems.raise_if_any()
        return self

    def check_runnable(self) -> "AdaptConfig":
        """What a run needs beyond valid values (checked before anything is
        written; a preset alone is valid but may not be runnable): the paper
        models run on real data and start from --init or --backbone, never
        from random weights or the synthetic benchmark."""
        problems = Problems()
        if self.source_model == "shipped" and self.init is None:
            from lse_fast.adapt.source import shipped_source_model  # (imports this module)

            problems.catch(shipped_source_model, self, True)
        if self.model in PAPER_MODELS and self.source == "synthetic":
            problems.add(
                f"{self.model} is a paper model for real data; give --source gta5:PATH (or "
                "synthia:PATH) and --target cityscapes:PATH (README, 'Reproducing the paper's tables'). The "
                "built-in synthetic benchmark is sized for small_deeplab on a CPU"
            )
        if self.model in PAPER_MODELS and self.init is None and self.backbone is None:
            problems.add(
                f"{self.model} needs a starting point: --init FILE (a source-trained checkpoint, "
                "e.g. the authors' or AdaptSegNet's GTA5 model) or --backbone FILE (ImageNet weights: "
                + ("torchvision resnet101 or the caffe-converted DeepLab ResNet-101" if "deeplab" in self.model
                   else "torchvision vgg16 or the caffe VGG16")
                + ") to train on the source first; it never trains from random weights"
            )
        problems.raise_if_any()
        return self

    def portions(self) -> list:
        ps = portion_schedule(self.portion_start, self.portion_step, self.portion_stop)
        if self.rounds is None:
            return ps
        return [min(1.0, round(self.portion_start + i * self.portion_step, 6)) for i in range(self.rounds)]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        home = os.environ.get("LSE_FAST_HOME")
        return Path(home) if home else Path.home() / ".cache" / "lse_fast"


PAPER_MODELS = ("deeplab_v2_resnet101", "fcn8s_vgg16")

# The source stage of the paper presets: AdaptSegNet's train_gta2cityscapes_multi.py (SGD, lr 2.5e-4,
# momentum 0.9, weight decay 5e-4, poly power 0.9, 10x lr on the classifier, batch 1, stopped at 150k steps).
PAPER_SOURCE_RECIPE = dict(
    pretrain_optimizer="sgd", pretrain_lr=2.5e-4, pretrain_momentum=0.9, pretrain_weight_decay=5e-4,
    pretrain_head_lr_mult=10.0, pretrain_iters=150_000, pretrain_batch_size=1, pretrain_color_aug=False,
)

PRESETS = {
    "synthetic": {},
    "paper-gta5-deeplab": dict(
        model="deeplab_v2_resnet101", image_size=(512, 1024), source_size=(512, 1024), num_classes=19,
        optimizer="adam", lr=1e-6, momentum=0.9, weight_decay=0.0, batch_size=1, source_batch_size=1,
        epochs=2.0, gamma=3.0, beta=0.1, patches_per_image=4, patch_scale=0.5,
        portion_start=0.1, portion_step=0.05, portion_stop=0.4, score_batch_size=4, **PAPER_SOURCE_RECIPE,
    ),
}
PRESETS["paper-gta5-fcn8s"] = dict(PRESETS["paper-gta5-deeplab"], model="fcn8s_vgg16")
# SYNTHIA -> Cityscapes is evaluated on the 16 classes both have (paper Table 2: mIoU16 / mIoU13); the source
# images are SYNTHIA-RAND-CITYSCAPES' native 760x1280 (as the peers' SYNTHIA runs read them).
SYNTHIA_SOURCE_SIZE = (760, 1280)
PRESETS["paper-synthia-deeplab"] = dict(PRESETS["paper-gta5-deeplab"], source_size=SYNTHIA_SOURCE_SIZE,
                                        num_classes=16)
PRESETS["paper-synthia-fcn8s"] = dict(PRESETS["paper-synthia-deeplab"], model="fcn8s_vgg16")

PRESET_HELP = (
    "synthetic: the defaults (built-in benchmark on a CPU); paper-gta5-deeplab / paper-synthia-deeplab: "
    "DeepLab-v2 ResNet-101 with the paper's hyperparameters (512x1024, Adam lr 1e-6 beta1 0.9, k=4 patches "
    "of half size, gamma 3, beta 0.1, p 0.10..0.40 in 0.05 steps, batch 1, 2 epochs per round); "
    "paper-gta5-fcn8s / paper-synthia-fcn8s: the same with FCN-8s VGG16. The paper-synthia-* presets use a "
    "16-class head and SYNTHIA's 760x1280 source images. Give --source, --target and --init "
    "(a source-trained model) or --backbone (ImageNet weights; the source stage then uses SGD lr 2.5e-4, "
    "momentum 0.9, weight decay 5e-4, poly 0.9, 10x on the head, batch 1, 150k steps)."
)


def _field_type(f):
    t = f.type
    if isinstance(t, str):
        t = eval(t, {"typing": typing})  # annotations are postponed strings
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    optional = origin is typing.Union and type(None) in args
    if optional:
        t = [a for a in args if a is not type(None)][0]
        origin = typing.get_origin(t)
    return t, origin, optional


def _parse_size(name):
    def parse(text):
        parts = str(text).lower().replace("x", ",").split(",")
        try:
            vals = tuple(int(p) for p in parts)
        except ValueError:
            vals = ()
        if len(vals) != 2:
            raise argparse.ArgumentTypeError(f"`{name}` must be HxW or H,W (e.g. 512x1024), got {text!r}")
        return vals

    return parse


def _optional(conv):
    def parse(text):
        if str(text).lower() in ("none", "null", ""):
            return None
        return conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def coerce(name: str, value, source: str = "config"):
    """Converts a YAML/dict value to the field's type, with a clear error."""
    fields = {f.name: f for f in dataclasses.fields(AdaptConfig)}
    if name not in fields:
        raise ConfigError(f"lse_fast.adapt: unknown option {name!r} in {source}{_closest(name, fields)}")
    t, origin, optional = _field_type(fields[name])
    if value is None:
        if optional:
            return None
        raise ConfigError(f"lse_fast.adapt: `{name}` in {source} must not be null")
    try:
        if origin is tuple:
            if isinstance(value, str):
                return _parse_size(name)(value)
            value = tuple(int(v) for v in value)
            if len(value) != 2:
                raise ValueError
            return value
        if t is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1", "on"):
                return True
            if str(value).lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if t is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if t is float:
            return float(value)
        return str(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise ConfigError(
            f"lse_fast.adapt: `{name}` in {source} must be {getattr(t, '__name__', t)}, got {value!r}"
        ) from None


def _yaml_values(path, problems: Problems) -> dict:
    """The options of a YAML file, converted; what is wrong with the file or
    any of its values goes into `problems` (those values are left out)."""
    p = Path(path)
    if not p.is_file():
        problems.add(f"config file {str(p)!r} does not exist")
        return {}
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        problems.add(f"config file {str(p)!r} is not valid YAML: {e}")
        return {}
    if not isinstance(data, dict):
        problems.add(f"config file {str(p)!r} must hold a mapping of options")
        return {}
    return _coerce_all(data, f"config file {str(p)!r}", problems)


def _coerce_all(d: dict, source: str, problems: Problems) -> dict:
    values = {}
    for k, v in d.items():
        name = str(k).replace("-", "_")
        value = problems.catch(lambda: (coerce(name, v, source),))
        if value is not None:
            values[name] = value[0]
    return values


def load_yaml(path) -> dict:
    """The options of a YAML file; one ConfigError listing every problem."""
    problems = Problems()
    values = _yaml_values(path, problems)
    problems.raise_if_any()
    return values


def _closest(name, known):
    """'; did you mean X?' for the closest known name, else the empty string."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


class Parser(argparse.ArgumentParser):
    """argparse with short errors: one line naming the bad option (and the
    closest valid one for a typo) and a pointer to --help, not the usage."""

    def error(self, message):
        known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        if message.startswith("unrecognized arguments:"):
            unknown = [t.split("=", 1)[0] for t in message.split(":", 1)[1].split() if t.startswith("-")]
            hints = []
            for flag in unknown or [message.split(":", 1)[1].strip()]:
                match = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
                hints.append(f"unknown option {flag}" + (f"; did you mean {match[0]}?" if match else ""))
            message = "; ".join(hints)
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m lse_fast.adapt",
        description=(
            "LSE self-training (Learning from Scale-Invariant Examples, ECCV 2020) with lse_fast's fused ops. "
            "Without arguments: generates (or reuses) the built-in synthetic benchmark, trains the small model "
            "on the source domain (or reuses that checkpoint), evaluates it on the target (source-only) and "
            "runs the self-training rounds, writing config.yaml, metrics.json, checkpoints and plots into the "
            "run directory. Precedence: defaults < --preset < --config < options."
        ),
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help=PRESET_HELP)
    parser.add_argument("--config", default=None, metavar="FILE", help="YAML file of options (keys as below, '_' or '-')")
    parser.add_argument(
        "--resume", default=None, metavar="RUN_DIR",
        help="continue an interrupted run from its last finished round (its config.yaml; only options that do not "
        "change results, such as --no-progress or --no-plots, may be given with it)",
    )
    for f in dataclasses.fields(AdaptConfig):
        t, origin, optional = _field_type(f)
        flag = "--" + f.name.replace("_", "-")
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=f.metadata["help"] + f" (default: {_show(f.default)})")
        if t is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if origin is tuple:
            conv, metavar = _parse_size(f.name), "HxW"
        else:
            conv, metavar = t, None
        if optional:
            conv = _optional(conv)
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        parser.add_argument(flag, type=conv, metavar=metavar, **kw)
    return parser


def _show(v):
    if isinstance(v, tuple):
        return "x".join(str(x) for x in v)
    return v


def make_config(args: argparse.Namespace, base: typing.Optional[dict] = None) -> AdaptConfig:
    """Config from parsed arguments: defaults < base (a resumed run's
    config) < preset < config file < options. Every problem (of the
    resumed config, the config file and the resulting values) is reported
    in one ConfigError."""
    problems = Problems()
    values = _coerce_all(base or {}, "the run's config.yaml", problems)
    if getattr(args, "preset", None):
        values.update(PRESETS[args.preset])
    if getattr(args, "config", None):
        values.update(_yaml_values(args.config, problems))
    names = {f.name for f in dataclasses.fields(AdaptConfig)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return AdaptConfig(**values).validate(problems)


def from_dict(d: dict, source="config") -> AdaptConfig:
    return AdaptConfig(**{k: coerce(k, v, source) for k, v in d.items()})
