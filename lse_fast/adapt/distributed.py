"""Data-parallel runs under ``torchrun`` (torch.distributed): what each stage
of Algorithm 1 does differently when the job has several processes.

``torchrun --nproc_per_node N -m lse_fast.adapt ...`` starts N processes
with RANK, WORLD_SIZE and LOCAL_RANK set; :func:`init_from_env` joins them
in one process group (NCCL when the run's device is CUDA, each process on
``cuda:LOCAL_RANK``; gloo on the CPU). Without those variables (or with
WORLD_SIZE 1) nothing here does anything and a run is the single-process
run, unchanged.

Per stage:

* source stage and round training: the model under DistributedDataParallel
  (gradients averaged over ranks each step); batch sizes are per rank
  (--pretrain-batch-size, --batch-size, --source-batch-size), so a step sees
  N times as many images; BatchNorm layers that train are SyncBatchNorm on
  CUDA (on the CPU, where SyncBatchNorm does not run, DDP keeps rank 0's
  running statistics on every rank);
* scoring: rank r scores the target images i with i % N == r; the per-image
  per-class sums of ``score`` are summed over ranks into the [N, C] tables
  indexed by dataset index (every row comes from exactly one rank and the
  others add zeros, so the tables are bitwise those of one process), and
  every rank computes the same selection and thresholds from them;
* patches: the selected images are dealt out by position (rank r takes
  positions r, r + N, ...; the same boxes as one process draws); the
  low-resolution probabilities of an image scored on another rank are sent
  to the rank that trains on it;
* evaluation: rank r evaluates val images r, r + N, ...; the confusion
  matrices are summed over ranks before IoU is computed;
* files: only rank 0 writes the run directory, the source-model cache,
  plots and the log; the other ranks follow the same metrics in memory.

A rank that fails prints its error (``error: [rank r/N] ...``) and exits
non-zero; torchrun then stops the others. SIGTERM, SIGINT or SIGHUP sent to
torchrun is passed on to every rank; each stops as a single process does
(``[rank r/N] interrupted by SIGTERM; continue with: ... --resume DIR``,
exit 143). Rank 0 alone holds the run directory's lock. Collectives time out after
``LSE_FAST_DIST_TIMEOUT`` seconds (default 600), so ranks started by
another launcher do not wait for a dead peer forever.
"""

from __future__ import annotations

import dataclasses

import contextlib
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from lse_fast.adapt.config import ConfigError
from lse_fast.adapt.runs import Run
from lse_fast.metrics import scores_from_confusion

TIMEOUT_ENV = "LSE_FAST_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


@dataclass
class DistState:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    timeout_s: float | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def prefix(self) -> str:
        """'[rank r/N] ' for messages of a distributed run, '' otherwise."""
        return f"[rank {self.rank}/{self.world_size}] " if self.enabled else ""

    def provenance(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend}


_STATE = DistState()


def current() -> DistState:
    """The state of this process (set by :func:`init_from_env`)."""
    return _STATE


def _env_int(name: str, default=None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"lse_fast.adapt: environment variable {name} must be an integer "
                          f"(as torchrun sets it), got {value!r}") from None


def _timeout_s() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    if value is None or value == "":
        return DEFAULT_TIMEOUT_S
    try:
        t = float(value)
    except ValueError:
        t = float("nan")
    if not (math.isfinite(t) and t > 0):
        raise ConfigError(f"lse_fast.adapt: environment variable {TIMEOUT_ENV} must be a positive number of "
                          f"seconds, got {value!r}")
    return t


def env_is_main() -> bool:
    """Whether this process is rank 0 of its job (or not distributed), read
    from the environment torchrun sets: usable before :func:`init_from_env`
    (rank 0 takes the run directory's lock first)."""
    if _STATE.enabled:
        return _STATE.is_main
    return _env_int("WORLD_SIZE", 1) <= 1 or _env_int("RANK", 0) == 0


def init_from_env(device_spec: str) -> DistState:
    """Joins the process group torchrun describes in RANK / WORLD_SIZE /
    LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); a no-op without them or
    with WORLD_SIZE 1. The backend is NCCL when ``device_spec`` resolves to
    CUDA ('auto' with a GPU, 'cuda', 'cuda:N'), gloo otherwise."""
    global _STATE
    world = _env_int("WORLD_SIZE", 1)
    if world < 1:
        raise ConfigError(f"lse_fast.adapt: environment variable WORLD_SIZE must be >= 1, got {world}")
    if world == 1:
        return _STATE
    if _STATE.enabled:
        return _STATE
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", 0)
    if rank is None:
        raise ConfigError("lse_fast.adapt: WORLD_SIZE is set but RANK is not; start distributed runs with "
                          "torchrun (torchrun --nproc_per_node N -m lse_fast.adapt ...)")
    if not 0 <= rank < world:
        raise ConfigError(f"lse_fast.adapt: environment variable RANK must be in [0, WORLD_SIZE={world}), got {rank}")
    cuda = device_spec.startswith("cuda") or (device_spec == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"lse_fast.adapt: `device` is {device_spec!r} but torch sees no CUDA device")
        if not 0 <= local_rank < torch.cuda.device_count():
            raise ConfigError(f"lse_fast.adapt: LOCAL_RANK {local_rank} has no GPU (this node has "
                              f"{torch.cuda.device_count()}); use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    timeout = _timeout_s()
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    _STATE = DistState(rank=rank, world_size=world, local_rank=local_rank, backend=backend, timeout_s=timeout)
    return _STATE


def shutdown() -> None:
    """Leaves the process group (end of a run, or after an error)."""
    global _STATE
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _STATE = DistState()


def report_error(e: BaseException) -> None:
    """Puts a failing rank's error in torchrun's error file, so torchrun's
    "Root Cause" summary shows the message (not only the exit code)."""
    if not _STATE.enabled or not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    try:
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(e)
    except Exception:  # noqa: BLE001  (the error itself was printed already; this is only the summary)
        pass


def rank_device(device: torch.device) -> torch.device:
    """This rank's GPU (cuda:LOCAL_RANK) when a distributed run is on CUDA."""
    if _STATE.enabled and device.type == "cuda":
        return torch.device("cuda", _STATE.local_rank)
    return device


def shard_args(shard: bool) -> dict:
    """shard_id / num_shards for ``lse_fast.data.loader`` (this rank's
    images: dataset order positions rank, rank + N, ...)."""
    if shard and _STATE.enabled:
        return {"shard_id": _STATE.rank, "num_shards": _STATE.world_size}
    return {}


# --------------------------------------------------------------------------- collectives
def _comm_device(ctx) -> torch.device:
    return ctx.device if _STATE.backend == "nccl" else torch.device("cpu")


def barrier() -> None:
    if _STATE.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the body first (e.g. generates the synthetic data), the
    others after it is done (they then find its result)."""
    if not _STATE.enabled:
        yield
        return
    if not _STATE.is_main:
        dist.barrier()
    yield
    if _STATE.is_main:
        dist.barrier()


def broadcast_flag(value: bool) -> bool:
    """Rank 0's `value` on every rank (decisions that read files)."""
    if not _STATE.enabled:
        return bool(value)
    obj = [bool(value)]
    dist.broadcast_object_list(obj, src=0)
    return bool(obj[0])


def sum_tensor(ctx, t: torch.Tensor) -> torch.Tensor:
    """`t` summed over ranks (exact for integers and for rows that only one
    rank fills), on t's device."""
    if not _STATE.enabled:
        return t
    buf = t.to(_comm_device(ctx), copy=True).contiguous()  # `t` itself is left as it was
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def mean_over_ranks(ctx, value: float) -> float:
    """The mean of a float over ranks (NaN stays NaN)."""
    if not _STATE.enabled:
        return value
    t = sum_tensor(ctx, torch.tensor([float(value)], dtype=torch.float64))
    return float(t[0]) / _STATE.world_size


def sync_model(ctx, model) -> None:
    """Rank 0's parameters and buffers on every rank (theta_0 and resumed
    checkpoints start identical everywhere)."""
    if not _STATE.enabled:
        return
    dev = _comm_device(ctx)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.device == dev:
                dist.broadcast(t.data, src=0)
            else:
                buf = t.detach().to(dev)
                dist.broadcast(buf, src=0)
                t.copy_(buf.to(t.device))


# --------------------------------------------------------------------------- model
def attach(ctx, model):
    """Checks that every rank gets data, and makes trainable BatchNorm
    SyncBatchNorm on CUDA. Returns the model to use."""
    if not _STATE.enabled:
        return model
    n = _STATE.world_size
    cfg = ctx.cfg
    for ds, what in ((ctx.target_base, "target train split"), (ctx.val, "target val split")):
        if len(ds) < n:
            raise ConfigError(f"lse_fast.adapt: the {what} has {len(ds)} images, fewer than the {n} processes "
                              "(WORLD_SIZE); every rank needs at least one")
    if not cfg.init and cfg.pretrain_iters > 0 and len(ctx.source) // n < cfg.pretrain_batch_size:
        raise ConfigError(f"lse_fast.adapt: the source has {len(ctx.source)} images: {len(ctx.source) // n} per rank "
                          f"for {n} processes, fewer than --pretrain-batch-size {cfg.pretrain_batch_size} (a batch "
                          "size per rank); lower it or use fewer processes")
    if ctx.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap(ctx, model):
    """`model` under DistributedDataParallel (the same object when not
    distributed). Gradients of parameters that require them are averaged
    over ranks in backward."""
    if not _STATE.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DDP(model, device_ids=ids, output_device=ids[0] if ids else None)


# --------------------------------------------------------------------------- scoring
def gather_scores(ctx, pixels, conf, ent, scored):
    """The full [N, C] tables on every rank from the rows each rank scored
    (row i = dataset index i, whichever rank scored it). `scored` is the
    list of dataset indices this rank filled."""
    if not _STATE.enabled:
        return pixels, conf, ent
    count = torch.zeros(pixels.shape[0], dtype=torch.int64)
    count[torch.as_tensor(scored, dtype=torch.int64)] = 1
    count = sum_tensor(ctx, count)
    if not bool((count == 1).all()):
        bad = torch.nonzero(count != 1).flatten()[:8].tolist()
        raise RuntimeError(f"lse_fast.adapt: scoring shards do not cover every target image exactly once "
                           f"(images {bad}); the ranks disagree about the target data set")
    return sum_tensor(ctx, pixels), sum_tensor(ctx, conf), sum_tensor(ctx, ent)


# --------------------------------------------------------------------------- patches
def positions_of(rank: int, world: int, num_selected: int) -> list:
    """Positions in the selection whose images `rank` trains on: rank,
    rank + N, ...; a rank beyond a selection smaller than N repeats
    position rank % S (every rank must take part in each step)."""
    if num_selected == 0:
        return []
    if rank < num_selected:
        return list(range(rank, num_selected, world))
    return [rank % num_selected]


def share_plan(ctx, plan, scores):
    """This rank's part of a round's PatchPlan, with the probabilities of
    its images (sent by the ranks that scored them) in ``scores.probs``."""
    if not _STATE.enabled or not plan.chosen:
        return plan
    rank, world = _STATE.rank, _STATE.world_size
    chosen = plan.chosen
    s = len(chosen)
    mine = positions_of(rank, world, s)
    if scores.probs is not None:  # None: every rank recomputes its images' maps (probs_ram_budget)
        _send_probs(ctx, chosen, scores, {chosen[p] for p in mine})
    k = plan.k
    rows = torch.tensor([p * k + j for p in mine for j in range(k)], dtype=torch.int64)
    boxes = plan.boxes[rows].clone()
    boxes[:, 0] = torch.arange(len(mine)).repeat_interleave(k).to(boxes.dtype)
    return dataclasses.replace(plan, chosen=[chosen[p] for p in mine], boxes=boxes)


def _send_probs(ctx, chosen, scores, keep):
    """Point-to-point exchange: each selected image's probability map goes
    from the rank that scored it to the ranks that train on it; afterwards
    ``scores.probs`` holds exactly the maps of `keep`."""
    rank, world = _STATE.rank, _STATE.world_size
    s = len(chosen)
    dev = _comm_device(ctx)
    # shape of one probability map [C, h, w] (a rank without candidates learns it from the others)
    local = next(iter(scores.probs.values()), None)
    shape_t = torch.tensor([0, 0, 0] if local is None else list(local.shape), dtype=torch.int64, device=dev)
    dist.all_reduce(shape_t, op=dist.ReduceOp.MAX)
    shape = tuple(int(v) for v in shape_t.cpu().tolist())
    ops, recv = [], {}
    for dst in range(world):
        for p in positions_of(dst, world, s):
            i = chosen[p]
            src = i % world
            if src == dst:
                continue
            if rank == src:
                if i not in scores.probs:
                    raise RuntimeError(f"lse_fast.adapt: rank {rank} has no probabilities of selected image {i}")
                ops.append(dist.P2POp(dist.isend, scores.probs[i].to(dev).contiguous(), dst, tag=p))
            elif rank == dst and i not in recv:
                recv[i] = torch.empty(shape, dtype=torch.float32, device=dev)
                ops.append(dist.P2POp(dist.irecv, recv[i], src, tag=p))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    for i, t in recv.items():
        scores.probs[i] = t.cpu()
    for i in [i for i in scores.probs if i not in keep]:
        del scores.probs[i]


def per_rank_patches(num_patches: int) -> int:
    """Patches of the largest rank's share (steps are counted on it)."""
    return math.ceil(num_patches / _STATE.world_size) if _STATE.enabled else num_patches


# --------------------------------------------------------------------------- evaluation
def merge_evaluation(ctx, res: dict) -> dict:
    """``lse_fast.evaluate.evaluate``'s result over all ranks: confusion
    matrices summed, IoU and mIoU recomputed from the sum."""
    if not _STATE.enabled:
        return res
    conf = sum_tensor(ctx, res["confusion"].to(torch.int64))
    out = dict(res)
    out.update(scores_from_confusion(conf))
    out["confusion"] = conf
    n = sum_tensor(ctx, torch.tensor([int(res["num_images"])], dtype=torch.int64))
    out["num_images"] = int(n[0])
    return out


# --------------------------------------------------------------------------- run directory
class FollowerRun(Run):
    """The run directory as a rank other than 0 sees it: the same metrics
    in memory, nothing written (rank 0 writes; checkpoints are read from
    the shared directory when resuming)."""

    def __init__(self, path, config, metrics):  # noqa: D107  (no mkdir, no lock: rank 0 has both)
        self.path = Path(path)
        self.config = config
        self.metrics = metrics
        self.created = False
        self.lock = None
        self.wrote = set()

    def save_config(self):
        pass

    def save_metrics(self):
        pass

    def save_checkpoint(self, r, model):
        return self.path / "checkpoints" / f"round_{r}.pt"

    def save_round(self, round_metrics, model):
        self.metrics["rounds"].append(round_metrics)

    def discard(self):
        pass


def _record(run) -> None:
    prov = run.metrics.get("provenance")
    resumed = run.metrics.get("resumed") or []
    target = resumed[-1]["provenance"] if resumed else prov
    if isinstance(target, dict):
        target.update(_STATE.provenance())


def open_run(resume, cfg, lock=None):
    """Creates (or resumes) the run directory on rank 0 and gives every
    other rank a :class:`FollowerRun` of it; records world_size and backend
    in the provenance. `lock`: the run directory's lock rank 0 already holds
    (taken by --resume before reading the directory). Only rank 0 holds the
    lock: the other ranks of the job write nothing."""
    if not _STATE.enabled:
        run = Run.resume(resume, cfg, lock=lock) if resume else Run.create(cfg)
        _record(run)
        run.save_metrics()
        return run
    dist.barrier()  # every rank has checked the options before rank 0 writes anything
    payload = [None, None]
    if _STATE.is_main:
        run = Run.resume(resume, cfg, lock=lock) if resume else Run.create(cfg)
        _record(run)
        run.save_metrics()
        payload = [str(run.path), run.metrics]
    dist.broadcast_object_list(payload, src=0)
    if _STATE.is_main:
        return run
    cfg.run_dir = payload[0]
    return FollowerRun(payload[0], cfg, payload[1])


__all__ = [
    "DistState", "FollowerRun", "attach", "barrier", "broadcast_flag", "current", "env_is_main", "gather_scores",
    "init_from_env",
    "main_first", "mean_over_ranks", "merge_evaluation", "open_run", "per_rank_patches", "positions_of",
    "rank_device", "report_error", "share_plan", "shard_args", "shutdown", "sum_tensor", "sync_model", "wrap",
]
