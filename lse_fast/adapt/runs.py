"""Run directory: config.yaml, metrics.json, checkpoints, provenance, resume.

Every artefact is written atomically (:func:`atomic_write`: a temporary
file in the same folder, fsync, ``os.replace``, fsync of the folder), so a
file is either its previous complete version or its new complete version,
never half written; leftover ``*.tmp`` files are ignored and removed on
``--resume``. The run directory (config.yaml, then metrics.json) is created
right after the options are checked, so a run killed at any later moment,
even in its first seconds, leaves a directory that ``--resume`` continues.
A resumed run redoes the round in progress from the last finished round's
checkpoint; every round's randomness is derived from (seed, round, stage),
so the result equals that of an uninterrupted run (on a CPU, exactly).

Fault-injection sites (``faults.point``) mark where the resume tests kill
a run (:mod:`lse_fast.adapt.faults`).
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy
import torch
import yaml

import lse_fast
from lse_fast.adapt import faults
from lse_fast.adapt.config import AdaptConfig, ConfigError, from_dict

CONFIG = "config.yaml"
METRICS = "metrics.json"
TMP_SUFFIX = ".tmp"

# --------------------------------------------------------------------------- atomic files
def _write_all(f, data: bytes) -> None:
    """f.write(data) (one place, so tests can make the disk full)."""
    f.write(data)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # a platform without directory fds: the rename itself is atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_error(path, e: OSError) -> OSError:
    """The OSError of a failed write, naming the file and what to do."""
    what = os.strerror(e.errno) if e.errno else str(e)
    hint = "; free some space, then continue the run with --resume" if e.errno == errno.ENOSPC else ""
    err = OSError(f"lse_fast.adapt: cannot write {str(path)!r}: {what} (errno {e.errno}){hint}")
    err.errno = e.errno  # str(err) stays the one line above
    return err


def atomic_write(path, data: bytes, stage: str | None = None) -> None:
    """Writes `data` to `path` atomically: a reader sees the old file or the
    new one, never a part. A failed write (e.g. ENOSPC) leaves the old file,
    removes the temporary one and raises an OSError naming `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            half = len(data) // 2
            _write_all(f, data[:half])
            if stage is not None:
                f.flush()
                faults.point(stage)
            _write_all(f, data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None
    _fsync_dir(path.parent)


def atomic_torch_save(obj, path, stage: str | None = None) -> None:
    """torch.save through :func:`atomic_write`."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue(), stage=stage)


def remove_stale_tmp(path: Path) -> list:
    """Removes the temporary files of writes a kill interrupted."""
    gone = []
    for d in (path, path / "checkpoints", path / "plots"):
        if d.is_dir():
            for f in d.glob("*" + TMP_SUFFIX):
                f.unlink(missing_ok=True)
                gone.append(f.name)
    return gone


def _clean(obj):
    """JSON-safe: NaN/inf -> None, tensors -> lists, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _clean(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def _dali_version():
    try:
        import nvidia.dali as dali  # optional: recorded when installed
    except Exception:  # noqa: BLE001  (DALI missing or broken: recorded as such)
        return None
    return dali.__version__


def provenance(seed: int) -> dict:
    """Seed, versions and git revision recorded with every run."""
    info = {
        "seed": seed,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lse_fast": lse_fast.__version__,
        "lse_fast_cuda_kernels": bool(lse_fast.built_with_cuda()),
        "platform": platform.platform(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    info["dali"] = _dali_version()
    info["numpy"] = numpy.__version__
    info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    repo = Path(lse_fast.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        info["git_revision"] = rev.stdout.strip() or None
        info["git_dirty"] = bool(dirty.stdout.strip()) if rev.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        info["git_revision"] = None
    return info


class Run:
    """A run directory."""

    def __init__(self, path: Path, config: AdaptConfig, metrics: dict, *, created: bool = False):
        self.path = Path(path)
        self.config = config
        self.metrics = metrics
        self.created = created  # this invocation made the directory (removed again by discard())

    def _make_subdirs(self):
        try:
            (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
            (self.path / "plots").mkdir(exist_ok=True)
        except OSError as e:
            raise write_error(self.path, e) from None

    # -- creation / resume ------------------------------------------------
    @staticmethod
    def _entries(path: Path) -> list:
        """Names in `path`, leftover temporary files left out."""
        return sorted(e.name for e in path.iterdir() if not e.name.endswith(TMP_SUFFIX))

    @staticmethod
    def check_new(config: AdaptConfig) -> None:
        """ConfigError when --run-dir already holds a run or other files, or
        cannot be written (checked before anything is written)."""
        if not config.run_dir:
            return
        path = Path(config.run_dir)
        if path.is_dir():
            entries = Run._entries(path)
            if CONFIG in entries or METRICS in entries:
                raise ConfigError(
                    f"lse_fast.adapt: run directory {str(path)!r} already holds a run; "
                    f"continue it with --resume {path} or choose another --run-dir"
                )
            if entries:
                shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
                raise ConfigError(
                    f"lse_fast.adapt: `run_dir` {str(path)!r} exists and is not empty (holds {shown}); "
                    "give a new or empty directory"
                )
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"lse_fast.adapt: `run_dir` {str(path)!r}: {str(existing)!r} is not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(
                f"lse_fast.adapt: `run_dir` {str(path)!r} cannot be written ({str(existing)!r} is not "
                "writable); choose another --run-dir"
            )

    @staticmethod
    def read_metrics(path, *, missing_ok: bool = False):
        """metrics.json of an existing run directory (read only); None when
        it is missing and `missing_ok` (a run killed before writing it)."""
        mfile = Path(path) / METRICS
        if not mfile.is_file():
            if missing_ok:
                return None
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: no {METRICS} there (not a run directory)")
        try:
            data = json.loads(mfile.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: {METRICS} is not valid JSON ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("rounds", []), list):
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: {METRICS} is not the metrics of a run "
                              "(expected an object with a 'rounds' list)")
        return data

    @staticmethod
    def _fresh_metrics(config: AdaptConfig) -> dict:
        return {"provenance": provenance(config.seed), "source_only": None, "rounds": []}

    @classmethod
    def create(cls, config: AdaptConfig) -> "Run":
        """A new run directory holding config.yaml and metrics.json (the
        first things written, so a kill from here on leaves a resumable
        directory)."""
        cls.check_new(config)
        if config.run_dir:
            path = Path(config.run_dir)
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = Path("runs") / stamp
            i = 1
            while path.exists():
                path = Path("runs") / f"{stamp}-{i}"
                i += 1
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(path, e) from None
        config.run_dir = str(path)
        run = cls(path, config, cls._fresh_metrics(config), created=created)
        try:
            run.save_config()
            run.save_metrics()
            run._make_subdirs()
        except OSError:
            run.discard()
            raise
        faults.point("start")
        return run

    def discard(self) -> None:
        """Removes what :meth:`create` wrote (a run stopped by a bad option
        or dataset before its first result leaves nothing behind)."""
        for name in (CONFIG, METRICS, CONFIG + TMP_SUFFIX, METRICS + TMP_SUFFIX):
            (self.path / name).unlink(missing_ok=True)
        for sub in ("checkpoints", "plots"):
            d = self.path / sub
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    @staticmethod
    def load_config(path) -> dict:
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: no such directory")
        cfg = path / CONFIG
        if not cfg.is_file():
            if not Run._entries(path):
                raise ConfigError(
                    f"lse_fast.adapt: --resume {str(path)!r}: the directory is empty, not a run directory (a "
                    "run killed before it wrote config.yaml leaves it so): start the run again without --resume"
                )
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: no {CONFIG} there (not a run directory)")
        try:
            data = yaml.safe_load(cfg.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: {CONFIG} is not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: {CONFIG} must hold a mapping of options")
        data.pop("run_dir", None)
        return data

    @classmethod
    def check_resumable(cls, path):
        """metrics.json of the run at `path` (None when a kill came before it
        was written); ConfigError when the directory is inconsistent."""
        path = Path(path)
        metrics = cls.read_metrics(path, missing_ok=True)
        if metrics is None:
            return None
        done = len(metrics.get("rounds", []))
        if done and not (path / "checkpoints" / f"round_{done}.pt").is_file():
            raise ConfigError(
                f"lse_fast.adapt: --resume {str(path)!r}: round {done} is finished but its checkpoint "
                f"{str(path / 'checkpoints' / f'round_{done}.pt')!r} is missing"
            )
        if done and metrics.get("source_only") is None:
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: metrics.json lists {done} rounds "
                              "but no source-only result; the run directory is inconsistent")
        return metrics

    @classmethod
    def resume(cls, path, config: AdaptConfig) -> "Run":
        path = Path(path)
        metrics = cls.check_resumable(path)
        if metrics is None:  # killed between config.yaml and metrics.json: nothing done yet
            metrics = cls._fresh_metrics(config)
        remove_stale_tmp(path)
        done = len(metrics.get("rounds", []))
        metrics.setdefault("rounds", [])
        metrics.setdefault("source_only", None)
        config.run_dir = str(path)
        run = cls(path, config, metrics)
        run._make_subdirs()
        run.metrics.setdefault("resumed", []).append({"after_round": done, "provenance": provenance(config.seed)})
        run.save_config()
        run.save_metrics()
        return run

    # -- files ----------------------------------------------------------------
    def save_config(self):
        atomic_write(self.path / CONFIG, yaml.safe_dump(self.config.to_dict(), sort_keys=False).encode())

    def save_metrics(self):
        atomic_write(self.path / METRICS, json.dumps(_clean(self.metrics), indent=1).encode(), stage="metrics")

    def finished_rounds(self) -> int:
        return len(self.metrics.get("rounds", []))

    def checkpoint_path(self, round_index: int):
        p = self.path / "checkpoints" / f"round_{round_index}.pt"
        return p if p.is_file() else None

    def save_checkpoint(self, r: int, model: torch.nn.Module) -> Path:
        """checkpoints/round_<r>.pt (round 0: the starting, source-only model)."""
        ckpt = self.path / "checkpoints" / f"round_{r}.pt"
        atomic_torch_save({"round": r, "model": model.state_dict(), "config": self.config.to_dict()}, ckpt,
                          stage="checkpoint")
        return ckpt

    def save_round(self, round_metrics: dict, model: torch.nn.Module):
        """Checkpoint first, then the metrics entry: a round counts as
        finished only once both are on disk."""
        ckpt = self.save_checkpoint(round_metrics["round"], model)
        self.metrics["rounds"].append(round_metrics)
        self.save_metrics()
        if self.config.keep_checkpoints == "last":
            for old in (self.path / "checkpoints").glob("round_*.pt"):
                if old != ckpt:
                    old.unlink()
        faults.point("round")

    def load_round(self, model: torch.nn.Module, round_index: int):
        p = self.checkpoint_path(round_index)
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "model" not in state:
                raise ValueError("no 'model' entry")
        except Exception as e:  # noqa: BLE001  (torch raises many types for a damaged file)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise RuntimeError(
                f"lse_fast.adapt: --resume: checkpoint {str(p)!r} is not a readable round checkpoint "
                f"(truncated or damaged: {type(e).__name__}: {first[:160]}); the run cannot continue from it"
            ) from None
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise RuntimeError(
                f"lse_fast.adapt: --resume: checkpoint {str(p)!r} does not fit this run's model ({first[:200]}); "
                "was an option such as --model or --num-classes given with --resume changed?"
            ) from None


__all__ = ["Run", "provenance", "from_dict"]
