"""The source stage (Algorithm 1's input theta_0): the model the rounds start
from, either a source-trained checkpoint (``--init``) or trained here on the
labelled source domain (cached under cache_dir, keyed by everything that
determines it)."""

from __future__ import annotations

import hashlib
import json
import os
import time

import torch
import torch.nn.functional as F

import lse_fast
from lse_fast import models
from lse_fast.adapt import distributed
from lse_fast.adapt.config import AdaptConfig, ConfigError
from lse_fast.adapt.context import Context, build_model, infinite, log, progress_bar, seed_for, synthetic_dir
from lse_fast.adapt.runs import atomic_torch_save, kill_point
from lse_fast.adapt.training import check_loss


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
    """The source stage's optimiser: Adam over every parameter (the small
    model's recipe), or the peers' recipe: SGD with momentum and weight decay
    and ``pretrain_head_lr_mult`` times the learning rate on the head."""
    if cfg.pretrain_optimizer == "adam" and cfg.pretrain_head_lr_mult == 1.0 and cfg.pretrain_weight_decay == 0.0 \
            and cfg.pretrain_momentum == 0.9:
        return torch.optim.Adam(model.parameters(), lr=cfg.pretrain_lr)
    head = tuple(getattr(model, "head_prefixes", ()))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not (head and n.startswith(head))], "lr": cfg.pretrain_lr},
              {"params": [p for n, p in named if head and n.startswith(head)],
               "lr": cfg.pretrain_lr * cfg.pretrain_head_lr_mult}]
    groups = [g for g in groups if g["params"]]
    if cfg.pretrain_optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.pretrain_lr, momentum=cfg.pretrain_momentum,
                               weight_decay=cfg.pretrain_weight_decay)
    return torch.optim.Adam(groups, lr=cfg.pretrain_lr, betas=(cfg.pretrain_momentum, 0.999),
                            weight_decay=cfg.pretrain_weight_decay)


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
    n = cfg.pretrain_iters
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - min(s, n - 1) / n) ** 0.9)
    model.train()
    net = distributed.wrap(ctx, model)
    bar = progress_bar(range(n), total=n, desc="source", enabled=ctx.progress)
    last = float("nan")
    for step in bar:
        b = next(batches)
        x, y = b["image"].to(ctx.device), b["label"].to(ctx.device)
        if cfg.pretrain_color_aug:
            x = color_augment(x, aug_gen)
        out = F.interpolate(net(x).float(), size=tuple(y.shape[-2:]), mode="bilinear", align_corners=False)
        loss = ctx.ops.focal_ce_loss(out, y, gamma=0.0, beta=0.0)
        last = check_loss(float(loss.detach()), f"source training, step {step + 1}/{n} (nothing is cached)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        kill_point("source")
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{last:.4f}")
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
