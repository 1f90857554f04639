"""Run directory: config.yaml, metrics.json, checkpoints, provenance, resume.

Every file is written to a temporary name and renamed into place, so a run
killed at any moment leaves the last finished round's checkpoint and
metrics intact: ``--resume`` loses at most the round in progress.
"""

from __future__ import annotations

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
from lse_fast.adapt.config import AdaptConfig, ConfigError, from_dict

CONFIG = "config.yaml"
METRICS = "metrics.json"


def _atomic_write(path: Path, data: bytes):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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

    def __init__(self, path: Path, config: AdaptConfig, metrics: dict):
        self.path = Path(path)
        self.config = config
        self.metrics = metrics
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.path / "plots").mkdir(exist_ok=True)

    # -- creation / resume ------------------------------------------------
    @staticmethod
    def check_new(config: AdaptConfig) -> None:
        """ConfigError when --run-dir already holds a run (checked before
        anything is written)."""
        if config.run_dir and (Path(config.run_dir) / METRICS).exists():
            path = Path(config.run_dir)
            raise ConfigError(
                f"lse_fast.adapt: run directory {str(path)!r} already holds a run; "
                f"continue it with --resume {path} or choose another --run-dir"
            )

    @staticmethod
    def read_metrics(path) -> dict:
        """metrics.json of an existing run directory (read only)."""
        mfile = Path(path) / METRICS
        if not mfile.is_file():
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: no {METRICS} there (not a run directory)")
        try:
            return json.loads(mfile.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: {METRICS} is not valid JSON ({e})") from None

    @classmethod
    def create(cls, config: AdaptConfig) -> "Run":
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
        path.mkdir(parents=True, exist_ok=True)
        config.run_dir = str(path)
        run = cls(path, config, {"provenance": provenance(config.seed), "source_only": None, "rounds": []})
        run.save_config()
        run.save_metrics()
        return run

    @staticmethod
    def load_config(path) -> dict:
        path = Path(path)
        cfg = path / CONFIG
        if not cfg.is_file():
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: no {CONFIG} there (not a run directory)")
        data = yaml.safe_load(cfg.read_text()) or {}
        data.pop("run_dir", None)
        return data

    @classmethod
    def resume(cls, path, config: AdaptConfig) -> "Run":
        path = Path(path)
        metrics = cls.read_metrics(path)
        done = len(metrics.get("rounds", []))
        if done and not (path / "checkpoints" / f"round_{done}.pt").is_file():
            raise ConfigError(
                f"lse_fast.adapt: --resume {str(path)!r}: round {done} is finished but its checkpoint "
                f"{str(path / 'checkpoints' / f'round_{done}.pt')!r} is missing"
            )
        if done and metrics.get("source_only") is None:
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: metrics.json lists {done} rounds "
                              "but no source-only result; the run directory is inconsistent")
        config.run_dir = str(path)
        run = cls(path, config, metrics)
        run.metrics.setdefault("resumed", []).append({"after_round": done, "provenance": provenance(config.seed)})
        run.save_config()
        run.save_metrics()
        return run

    # -- files ----------------------------------------------------------------
    def save_config(self):
        _atomic_write(self.path / CONFIG, yaml.safe_dump(self.config.to_dict(), sort_keys=False).encode())

    def save_metrics(self):
        _atomic_write(self.path / METRICS, json.dumps(_clean(self.metrics), indent=1).encode())

    def finished_rounds(self) -> int:
        return len(self.metrics.get("rounds", []))

    def checkpoint_path(self, round_index: int):
        p = self.path / "checkpoints" / f"round_{round_index}.pt"
        return p if p.is_file() else None

    def save_checkpoint(self, r: int, model: torch.nn.Module) -> Path:
        """checkpoints/round_<r>.pt (round 0: the starting, source-only model)."""
        ckpt = self.path / "checkpoints" / f"round_{r}.pt"
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        torch.save({"round": r, "model": model.state_dict(), "config": self.config.to_dict()}, tmp)
        os.replace(tmp, ckpt)
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

    def load_round(self, model: torch.nn.Module, round_index: int):
        p = self.checkpoint_path(round_index)
        state = torch.load(p, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])


def config_from_run(path) -> dict:
    return Run.load_config(path)


__all__ = ["Run", "provenance", "config_from_run", "from_dict"]
