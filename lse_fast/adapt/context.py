"""What every stage of a run needs (Algorithm 1's inputs): the op set, the
device, the source / target / val datasets, the model, the loaders, seeds,
timing and logging. Built once by :func:`make_context` before anything is
written to the run directory, so a bad dataset or checkpoint stops the run
without leaving files behind.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from pathlib import Path

import torch

import lse_fast.ops as fused_ops
import lse_fast.reference as reference_ops
from lse_fast import models
from lse_fast.adapt import distributed
from lse_fast.adapt.config import AdaptConfig, ConfigError
from lse_fast.adapt.progress import Progress
from lse_fast.adapt.verify import VerifyingOps
from lse_fast.data import from_spec, loader as dali_loader, synthetic, to_synthia16
from lse_fast.data.dali import DALI_INSTALL, dali_available
from lse_fast.data.pil import loader as pil_loader

SYNTHETIC_DATA_SEED = 0  # the benchmark's content does not depend on the run seed


def log(msg: str) -> None:
    """A line of the run's log (rank 0's only in a distributed run)."""
    if distributed.current().is_main:
        print(msg, flush=True)


# --------------------------------------------------------------------------- ops
class Ops:
    """The seam through which every step calls the four ops of a round:
    fused (``lse_fast.ops``) or reference (``lse_fast.reference``); --verify
    puts :class:`lse_fast.adapt.verify.VerifyingOps` in its place."""

    NAMES = ("score", "focal_ce_loss", "crop_resize", "crop_pseudo_labels")

    def __init__(self, kind: str):
        modules = {"fused": fused_ops, "reference": reference_ops}
        if kind not in modules:
            raise ConfigError(f"lse_fast.adapt: `ops` must be 'fused' or 'reference', got {kind!r}")
        self.kind = kind
        mod = modules[kind]
        for name in self.NAMES:
            fn = getattr(mod, name, None)
            if fn is None:
                raise RuntimeError(
                    f"lse_fast.adapt: --ops {kind}: this lse_fast has no {mod.__name__}.{name}; "
                    "rebuild/update lse_fast (bash scripts/setup.sh)"
                )
            setattr(self, name, fn)

    def report(self):
        """What the ops have to record in metrics.json (nothing here)."""
        return None


def make_ops(cfg: AdaptConfig):
    """The run's op set: --ops, or the fused ops checked call by call (--verify)."""
    return VerifyingOps() if cfg.verify else Ops(cfg.ops)


# --------------------------------------------------------------------------- small helpers
class StageClock:
    """Seconds per stage of a round, measured by ``with clock("score"):``
    (waiting for the GPU first). A stage nested in another is counted in
    its own entry only: the "patches" made inside "train" are not train
    time."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.seconds = {}
        self._open = []  # [seconds spent in nested stages] of each open stage

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def reset(self, *names) -> None:
        """A new round: every entry cleared, `names` set to 0."""
        self.seconds = {n: 0.0 for n in names}

    @contextlib.contextmanager
    def __call__(self, name: str):
        nested = [0.0]
        self._open.append(nested)
        t0 = self.now()
        try:
            yield
        finally:
            total = self.now() - t0
            self._open.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + total - nested[0]
            if self._open:
                self._open[-1][0] += total


def seed_for(seed: int, round_index: int, stage: int) -> int:
    """Seeds derived from (run seed, round, stage): every round's randomness
    is independent of what ran before it, which is what makes --resume give
    the same result as an uninterrupted run."""
    return (int(seed) * 1_000_003 + int(round_index) * 7_919 + int(stage) * 104_729) % (2**31 - 1)


def amp_dtype(device, enabled: bool):
    """The run's one autocast rule: bfloat16 on CUDA when --amp, else None
    (on the CPU bfloat16 autocast is many times slower;
    :func:`warn_about_machine` says so once at the start of a run)."""
    return torch.bfloat16 if enabled and torch.device(device).type == "cuda" else None


def autocast(device, enabled: bool):
    """A context manager applying :func:`amp_dtype` (nothing when it is None)."""
    dtype = amp_dtype(device, enabled)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return distributed.rank_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"lse_fast.adapt: `device` is {spec!r} but torch sees no CUDA device")
    return distributed.rank_device(dev)


def infinite(loader):
    """Batches of `loader`, epoch after epoch."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("lse_fast.adapt: a loader yields no batch (empty dataset?)")


class View:
    """A label-free view of a dataset restricted to some indices: the target
    train split is adapted to without its labels, and the trainer loads only
    the selected images."""

    has_labels = False

    def __init__(self, dataset, indices=None):
        self.base = dataset
        self.indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        self.name = getattr(dataset, "name", type(dataset).__name__)
        self.classes = getattr(dataset, "classes", None)
        self.label_lut = getattr(dataset, "label_lut", None)
        self.label_channel = getattr(dataset, "label_channel", 0)

    def __len__(self):
        return len(self.indices)

    def image_path(self, i):
        return self.base.image_path(self.indices[int(i)])

    def label_path(self, i):
        return None

    def __repr__(self):
        return f"View({self.name!r}, {len(self)} images)"


# --------------------------------------------------------------------------- model and data
def model_options(cfg: AdaptConfig, input_normalization=None) -> dict:
    """The run's model options, by factory argument name."""
    opts = {
        "freeze_bn": cfg.freeze_bn,
        "aspp_branches": None if cfg.aspp_branches == "auto" else int(cfg.aspp_branches),
        "skip_scale": None if cfg.skip_scale == "auto" else cfg.skip_scale,
    }
    if input_normalization is not None:
        opts["input_normalization"] = input_normalization
    return opts


def build_model(cfg: AdaptConfig, input_normalization=None):
    """The configured model; a factory gets those of the run's model options
    it takes (``freeze_bn`` and ``aspp_branches`` for DeepLab-v2,
    ``skip_scale`` for FCN-8s), so e.g. --no-freeze-bn reaches its BatchNorm
    layers."""
    try:
        kwargs = models.factory_options(cfg.model, model_options(cfg, input_normalization))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if input_normalization is not None and "input_normalization" not in kwargs:
        raise ConfigError(f"lse_fast.adapt: --backbone needs input normalization {input_normalization!r}, but "
                          f"model {cfg.model!r} takes no `input_normalization` argument")
    return models.build(cfg.model, num_classes=cfg.num_classes, **kwargs)


def class_set(source, target, val, num_classes):
    """Classes taking part in selection and mIoU: those both domains have
    (16 for SYNTHIA -> Cityscapes, 19 for GTA5 -> Cityscapes)."""
    classes = set(range(num_classes))
    for ds in (source, target, val):
        have = getattr(ds, "classes", None)
        if have is not None:
            classes &= {int(c) for c in have}
    if not classes:
        raise ConfigError("lse_fast.adapt: the source and target datasets share no class")
    return sorted(classes)


def class_names(dataset, num_classes):
    names = getattr(dataset, "class_names", None)
    if names is not None and len(names) == num_classes:
        return list(names)
    return [f"class_{i}" for i in range(num_classes)]


def _dataset(spec, split, what, **kwargs):
    kind, _, path = spec.partition(":")
    if not path:
        raise ConfigError(f"lse_fast.adapt: `{what}` must be KIND:PATH, got {spec!r}")
    if not Path(path).exists():
        raise ConfigError(f"lse_fast.adapt: `{what}` path {path!r} does not exist")
    try:
        return from_spec(spec, split=split, **kwargs)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise ConfigError(f"lse_fast.adapt: `{what}` {spec!r}: {e}") from None


def synthetic_dir(cfg: AdaptConfig) -> Path:
    h, w = cfg.image_size
    return cfg.cache_path() / "synthetic" / (
        f"{h}x{w}-s{cfg.synthetic_source}-t{cfg.synthetic_train}-v{cfg.synthetic_val}-seed{SYNTHETIC_DATA_SEED}"
    )


def load_datasets(cfg: AdaptConfig):
    """(source, target train, target val) datasets; generates or reuses the
    synthetic benchmark."""
    if cfg.source == "synthetic":
        out = synthetic_dir(cfg)
        t0 = time.perf_counter()
        with distributed.main_first():  # rank 0 generates, the other ranks reuse
            synthetic.ensure(out, num_source=cfg.synthetic_source, num_target_train=cfg.synthetic_train,
                             num_target_val=cfg.synthetic_val, size=tuple(cfg.image_size), seed=SYNTHETIC_DATA_SEED)
        log(f"[data] synthetic benchmark at {out} ({time.perf_counter() - t0:.1f} s)")
        source = _dataset(f"gta5:{out / 'source'}", "train", "source", label_size_mismatch=cfg.label_size_mismatch)
        target = _dataset(f"cityscapes:{out / 'target'}", "train", "target")
        val = _dataset(f"cityscapes:{out / 'target'}", "val", "target")
    else:
        kw = {} if cfg.source.startswith("cityscapes:") else {"label_size_mismatch": cfg.label_size_mismatch}
        source = _dataset(cfg.source, "train", "source", **kw)
        target = _dataset(cfg.target, "train", "target")
        val = _dataset(cfg.target, "val", "target")
    if cfg.num_classes == 16:
        source, target, val = (to_synthia16(ds) for ds in (source, target, val))
    for ds, what in ((source, "source"), (target, "target train split"), (val, "target val split")):
        if len(ds) == 0:
            raise ConfigError(f"lse_fast.adapt: the {what} ({ds!r}) has no images")
    if not source.has_labels:
        raise ConfigError(f"lse_fast.adapt: the source ({source!r}) has no labels")
    if not val.has_labels:
        raise ConfigError(f"lse_fast.adapt: the target val split ({val!r}) has no labels to evaluate on")
    return source, target, val


# --------------------------------------------------------------------------- context
class Context:
    """What every stage needs: config, ops, device, stage clock, datasets
    and loaders."""

    def __init__(self, cfg: AdaptConfig, model, datasets):
        self.cfg = cfg
        self.ops = make_ops(cfg)
        self.device = resolve_device(cfg.device)
        self.clock = StageClock(self.device)
        self.source, self.target_base, self.val = datasets
        self.target_view = View(self.target_base)
        self.normalization = getattr(model, "input_normalization", "imagenet")
        self.classes = class_set(self.source, self.target_base, self.val, cfg.num_classes)
        self.class_names = class_names(self.target_base, cfg.num_classes)
        self.progress = bool(cfg.progress) and sys.stderr.isatty()  # the evaluator's own display on a terminal
        self.loader_kind = resolve_loader(cfg.loader)
        self.loader_device = "cpu"
        if self.device.type == "cuda" and cfg.loader_device == "auto":
            self.loader_device = "cuda" if self.device.index is None else f"cuda:{self.device.index}"
        self.bad_files = {}  # path -> reason, with --skip-bad-files
        val_size = None if cfg.eval_size == "native" else tuple(cfg.image_size)
        val_loader = self.loader(self.val, batch_size=cfg.score_batch_size, size=val_size, shard=True)
        self.val_loader = Progress(val_loader, total=len(val_loader), desc="eval", unit="batches",
                                   enabled=cfg.progress, bar=False)

    def _bad_file(self, path, message):
        """--skip-bad-files: an unreadable file, logged the first time."""
        if path not in self.bad_files:
            self.bad_files[path] = message
            log(f"[data] skipping an unreadable file (--skip-bad-files): {message}")

    def loader(self, dataset, *, batch_size, size, shuffle=False, seed=0, train=False, shard=False):
        """A loader of `dataset` (DALI or PIL, see --loader) delivering batches
        on ``loader_device``; the stages move them to the model's device.
        ``shard``: in a distributed run, only this rank's part of each epoch."""
        make = dali_loader if self.loader_kind == "dali" else pil_loader
        return make(dataset, batch_size=batch_size, size=None if size is None else tuple(size), shuffle=shuffle,
                    seed=seed, train=train, device=self.loader_device, num_threads=self.cfg.num_threads,
                    normalization=self.normalization,
                    on_bad_file=self._bad_file if self.cfg.skip_bad_files else None, **distributed.shard_args(shard))


def resolve_loader(kind: str) -> str:
    """'dali' when asked for and importable; otherwise 'pil' (with one
    warning when DALI was asked for)."""
    if kind == "dali" and not dali_available():
        warnings.warn(f"lse_fast.adapt: NVIDIA DALI is not installed; using the PIL loader (--loader pil), which "
                      f"is slower. Install DALI with: {DALI_INSTALL}", RuntimeWarning, stacklevel=2)
        return "pil"
    return kind


def warn_about_machine(cfg: AdaptConfig, device: torch.device) -> None:
    """Says once what an option will not do on this machine."""
    if cfg.amp and amp_dtype(device, cfg.amp) is None:
        warnings.warn("lse_fast.adapt: --amp (bfloat16 autocast) applies on CUDA only; this run on the CPU "
                      "computes in float32", RuntimeWarning, stacklevel=2)


def make_context(cfg: AdaptConfig, input_normalization=None):
    """(context, model) with datasets loaded, the model built (with
    `input_normalization` when given, e.g. that of a --backbone file) and
    moved to the device; seeds drawn in the order of every earlier version
    (the default run's numbers do not change)."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    warn_about_machine(cfg, device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    datasets = load_datasets(cfg)
    torch.manual_seed(seed_for(cfg.seed, 0, 0))
    model = build_model(cfg, input_normalization)
    ctx = Context(cfg, model, datasets)
    model = distributed.attach(ctx, model)
    model.to(ctx.device)
    return ctx, model
