"""The source stage (Algorithm 1's input theta_0): the model the rounds start
from, either a source-trained checkpoint (``--init``), the source model
shipped with the package for the built-in benchmark's default configuration
(``--source-model auto|shipped``, :data:`SHIPPED_MODEL`), or trained here on
the labelled source domain (cached under cache_dir, keyed by everything that
determines it)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

import lse_fast
from lse_fast import models
from lse_fast.adapt import distributed
from lse_fast.adapt.config import AdaptConfig, ConfigError
from lse_fast.adapt.context import (SYNTHETIC_DATA_SEED, Context, build_model, infinite, log, model_options,
                                    seed_for, synthetic_dir)
from lse_fast.adapt.runs import atomic_torch_save
from lse_fast.adapt.training import make_optimizer, poly_schedule, set_train_mode, supervised_loss, train_loop


def load_init(cfg: AdaptConfig, model) -> str:
    """Loads ``cfg.init`` into `model`; a checkpoint that leaves any model
    tensor unset is a ConfigError (a head left random would make every
    number of the run meaningless)."""
    try:
        missing, _unexpected = models.load_checkpoint(model, cfg.init)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        raise ConfigError(f"lse_fast.adapt: `init` checkpoint {cfg.init!r}: {e}") from None
    if missing:
        shown = ", ".join(list(missing)[:8]) + (" ..." if len(missing) > 8 else "")
        raise ConfigError(
            f"lse_fast.adapt: `init` checkpoint {cfg.init!r} leaves {len(missing)} model tensors "
            f"unset (missing or of another shape, e.g. a head for another number of classes): {shown}"
        )
    return cfg.init


def read_backbone(cfg: AdaptConfig):
    """(state dict, input normalization) of the --backbone file: torchvision
    layouts (``features.N`` of VGG16, ``fc`` of ResNet without the caffe
    ``Scale.`` prefix) expect 'imagenet', the caffe-converted ones 'caffe'."""
    try:
        state, _ = models.read_state_dict(cfg.backbone)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        raise ConfigError(f"lse_fast.adapt: `backbone` {cfg.backbone!r}: {e}") from None
    if cfg.backbone_normalization != "auto":
        return state, cfg.backbone_normalization
    caffe = any(k.startswith(("Scale.", "module.Scale.")) for k in state)
    torchvision = "features.0.weight" in state or ("fc.weight" in state and not caffe)
    return state, "imagenet" if torchvision else "caffe"


def load_backbone(cfg: AdaptConfig, model, state) -> None:
    """Loads ImageNet weights into everything but the head; a file that
    leaves a backbone tensor unset is a ConfigError."""
    try:
        missing, _ = models.load_checkpoint(model, state)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"lse_fast.adapt: `backbone` {cfg.backbone!r}: {e}") from None
    head = tuple(getattr(model, "head_prefixes", ()))
    unset = [k for k in missing if not k.startswith(head)]
    if unset:
        raise ConfigError(
            f"lse_fast.adapt: `backbone` {cfg.backbone!r} leaves {len(unset)} backbone tensors of {cfg.model} unset "
            f"(e.g. {', '.join(unset[:4])}); expected an ImageNet ResNet-101 / VGG16 in torchvision or caffe layout"
        )
    log(f"[source] backbone {cfg.backbone}: {len(missing)} head tensors left as initialised; input normalization "
        f"{model.input_normalization}")


def _file_id(path):
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, int(st.st_mtime)]


def source_model_key(cfg: AdaptConfig, source) -> str:
    desc = {
        "model": cfg.model, "num_classes": cfg.num_classes, "source": cfg.source,
        "source_root": str(getattr(source, "root", "")), "source_images": len(source),
        "source_size": list(cfg.source_size), "iters": cfg.pretrain_iters, "lr": cfg.pretrain_lr,
        "batch": cfg.pretrain_batch_size, "seed": cfg.seed, "lse_fast": lse_fast.__version__,
        "color_aug": cfg.pretrain_color_aug,
    }
    if cfg.source == "synthetic":
        desc["synthetic"] = synthetic_dir(cfg).name
    recipe = (cfg.pretrain_optimizer, cfg.pretrain_momentum, cfg.pretrain_weight_decay, cfg.pretrain_head_lr_mult)
    if recipe != ("adam", 0.9, 0.0, 1.0):  # keys of the default recipe stay as they were
        desc["recipe"] = list(recipe)
    if cfg.backbone:
        desc["backbone"] = _file_id(cfg.backbone)
        desc["backbone_normalization"] = cfg.backbone_normalization
    if distributed.current().enabled:  # batch sizes are per rank: N ranks train another model
        desc["world_size"] = distributed.current().world_size
    return hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the shipped source model
ASSETS = Path(lse_fast.__file__).resolve().parent / "assets"
SHIPPED_MODEL = ASSETS / "synthetic_source_small_deeplab.pt"
SHIPPED_MANIFEST = ASSETS / "synthetic_source_small_deeplab.json"
REBUILD_COMMAND = "python -m lse_fast.assets.rebuild"


def source_fingerprint(cfg: AdaptConfig) -> dict:
    """Every option that determines the source-trained model: the source
    data (the synthetic benchmark's generator version, sizes and content
    seed), the model and its options, the starting point (--init,
    --backbone), the source-stage recipe, the seed and the number of ranks.
    Not in it: the device, ops, loader and thread count (they change the
    trained weights only by floating-point rounding) and the lse_fast
    version (the shipped model's test guards the training code)."""
    from lse_fast.data import synthetic

    fp = {
        "source": cfg.source, "image_size": list(cfg.image_size), "source_size": list(cfg.source_size),
        "model": cfg.model, "num_classes": cfg.num_classes, "model_options": model_options(cfg),
        "init": cfg.init, "backbone": cfg.backbone, "backbone_normalization": cfg.backbone_normalization,
        "pretrain_iters": cfg.pretrain_iters, "pretrain_optimizer": cfg.pretrain_optimizer,
        "pretrain_lr": cfg.pretrain_lr, "pretrain_momentum": cfg.pretrain_momentum,
        "pretrain_weight_decay": cfg.pretrain_weight_decay, "pretrain_head_lr_mult": cfg.pretrain_head_lr_mult,
        "pretrain_batch_size": cfg.pretrain_batch_size, "pretrain_color_aug": cfg.pretrain_color_aug,
        "seed": cfg.seed, "world_size": distributed.current().world_size if distributed.current().enabled else 1,
    }
    if cfg.source == "synthetic":
        fp["synthetic"] = {"version": synthetic.VERSION, "num_source": cfg.synthetic_source,
                           "num_target_train": cfg.synthetic_train, "num_target_val": cfg.synthetic_val,
                           "content_seed": SYNTHETIC_DATA_SEED}
    return json.loads(json.dumps(fp))  # tuples as lists: comparable with the manifest read back


def read_manifest(path=SHIPPED_MANIFEST) -> dict:
    """The shipped model's manifest (sha256, fingerprint, where it was
    trained, its source-only mIoU); a missing or malformed one is a
    ConfigError naming the file."""
    try:
        man = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"lse_fast.adapt: the shipped source model's manifest {path}: {e}") from None
    missing = [k for k in ("file", "sha256", "fingerprint", "source_only_miou") if k not in man]
    if missing:
        raise ConfigError(f"lse_fast.adapt: the shipped source model's manifest {path} lacks {', '.join(missing)}")
    return man


def fingerprint_differences(cfg: AdaptConfig, manifest: dict) -> list:
    """The fingerprint entries where `cfg` differs from the shipped model's."""
    now, shipped = source_fingerprint(cfg), manifest["fingerprint"]
    return sorted(k for k in set(now) | set(shipped) if now.get(k) != shipped.get(k))


def shipped_source_model(cfg: AdaptConfig, strict: bool = False):
    """The shipped model's path when this run's source stage uses it, else
    None: ``source_model`` 'train' (or --init) never does; 'auto' and
    'shipped' do when the source fingerprint equals the shipped one. With
    `strict` (the option check before a run) 'shipped' must: a ConfigError
    names the options that differ."""
    if cfg.source_model == "train" or cfg.init:
        return None
    if cfg.source_model == "auto" and (cfg.source != "synthetic" or not SHIPPED_MANIFEST.is_file()):
        return None
    manifest = read_manifest()
    diff = fingerprint_differences(cfg, manifest)
    if diff:
        if strict and cfg.source_model == "shipped":
            raise ConfigError(
                "lse_fast.adapt: `source_model` 'shipped' needs the configuration the shipped model was trained "
                f"with; these differ: {', '.join(diff)} (use --source-model auto or train)")
        return None
    return SHIPPED_MODEL


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_shipped(model, path=SHIPPED_MODEL, manifest_path=SHIPPED_MANIFEST) -> None:
    """Loads the shipped source model into `model` after checking its
    sha256 against the manifest (a mismatch is a ConfigError: a damaged or
    replaced file is never used silently)."""
    manifest = read_manifest(manifest_path)
    digest = sha256_file(path)
    if digest != manifest["sha256"]:
        raise ConfigError(f"lse_fast.adapt: the shipped source model {path} has sha256 {digest}, its manifest "
                          f"{manifest_path} says {manifest['sha256']}; rebuild it with `{REBUILD_COMMAND}` or run "
                          "with --source-model train")
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})


def color_augment(x, generator):
    """Random photometric change of normalised images [B, 3, H, W]: per image
    a desaturation towards the channel mean (weight 0..0.6), per-channel gains
    (0.6..1.4) and offsets (-0.6..0.6, in normalised units)."""
    b = x.shape[0]
    sat = torch.rand(b, 1, 1, 1, generator=generator) * 0.6
    gain = 0.6 + 0.8 * torch.rand(b, 3, 1, 1, generator=generator)
    shift = 1.2 * torch.rand(b, 3, 1, 1, generator=generator) - 0.6
    sat, gain, shift = sat.to(x.device), gain.to(x.device), shift.to(x.device)
    gray = x.mean(1, keepdim=True)
    return (x * (1 - sat) + gray * sat) * gain + shift


def source_optimizer(cfg: AdaptConfig, model):
    """The source stage's optimiser (the pretrain_* options): Adam for the
    small model, the peers' SGD recipe with a faster head for the paper's."""
    return make_optimizer(model, cfg.pretrain_optimizer, lr=cfg.pretrain_lr, momentum=cfg.pretrain_momentum,
                          weight_decay=cfg.pretrain_weight_decay, head_lr_mult=cfg.pretrain_head_lr_mult)


def source_checkpoint_path(ctx: Context):
    cfg = ctx.cfg
    name = cfg.model.replace(":", "_").replace("/", "_")
    return cfg.cache_path() / "source_models" / f"{name}-{source_model_key(cfg, ctx.source)}.pt"


def pretrain_source(ctx: Context, model):
    """Trains the model on the source domain (or reuses the cached result)
    and returns the checkpoint path (None when pretrain_iters is 0). In a
    distributed run the training is data-parallel (``pretrain_batch_size``
    images per rank and step); rank 0 reads and writes the cache and its
    weights are given to every rank."""
    cfg = ctx.cfg
    shipped = shipped_source_model(cfg)
    if shipped is not None:
        if distributed.current().is_main:
            load_shipped(model)
            log(f"[source] using the source model shipped for the built-in benchmark's default configuration "
                f"({shipped}; source-only mIoU {100 * read_manifest()['source_only_miou']:.1f}% where it was made); "
                f"--source-model train trains it here instead, `{REBUILD_COMMAND}` remakes the file")
        distributed.sync_model(ctx, model)
        return str(shipped)
    path = source_checkpoint_path(ctx)
    if distributed.broadcast_flag(path.is_file()):
        loaded = True
        if distributed.current().is_main:
            try:
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
                log(f"[source] reusing the source-trained model {path}")
            except Exception as e:  # noqa: BLE001  (a damaged cache file: made again)
                log(f"[source] the cached source model {path} cannot be loaded ({type(e).__name__}: {e}); "
                    "training it again")
                torch.manual_seed(seed_for(cfg.seed, 0, 0))
                model.load_state_dict(build_model(cfg).state_dict())
                loaded = False
        if distributed.broadcast_flag(loaded):
            distributed.sync_model(ctx, model)
            return str(path)
    if cfg.pretrain_iters == 0:
        log("[source] pretrain_iters = 0: starting from the untrained model")
        return None
    log(f"[source] training {cfg.model} on the source domain for {cfg.pretrain_iters} steps "
        f"({cfg.pretrain_optimizer}, lr {cfg.pretrain_lr:g}, head x{cfg.pretrain_head_lr_mult:g})")
    t0 = time.perf_counter()
    torch.manual_seed(seed_for(cfg.seed, 0, 10))
    loader = ctx.loader(ctx.source, batch_size=min(cfg.pretrain_batch_size, len(ctx.source)),
                        size=tuple(cfg.source_size), shuffle=True, seed=seed_for(cfg.seed, 0, 11), train=True,
                        shard=True)
    batches = infinite(loader)
    aug_gen = torch.Generator().manual_seed(seed_for(cfg.seed, 0, 12))
    opt = source_optimizer(cfg, model)
    set_train_mode(model, freeze_bn=False)
    net = distributed.wrap(ctx, model)

    def step_loss(step):
        b = next(batches)
        x, y = b["image"].to(ctx.device), b["label"].to(ctx.device)
        if cfg.pretrain_color_aug:
            x = color_augment(x, aug_gen)
        loss, _ = supervised_loss(ctx, net, x, y, 0.0, 0.0, amp=False)  # float32 (the cache key has no amp)
        return loss

    n = cfg.pretrain_iters
    losses = train_loop(ctx, opt, poly_schedule(opt, n), n, step_loss, desc="source", where="source training",
                        note=" (nothing is cached)", fault="source")
    last = losses[-1]
    if distributed.current().is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"model": model.state_dict(), "config": cfg.to_dict()}, path)
    distributed.barrier()  # the cache file exists before any rank goes on
    log(f"[source] done in {time.perf_counter() - t0:.1f} s (last loss {last:.4f}); cached at {path}")
    return str(path)


def initial_model(ctx: Context, model):
    """theta_0: loads --init or trains on the source; returns where it came
    from (a path, or None for an untrained model)."""
    if ctx.cfg.init:
        return load_init(ctx.cfg, model)
    return pretrain_source(ctx, model)
