"""Run directory: config.yaml, metrics.json, checkpoints, provenance, resume.

Every artefact is written atomically (:func:`atomic_write`: a temporary
file with a name unique to the writing process in the same folder, fsync,
``os.replace``, fsync of the folder), so a file is either its previous
complete version or its new complete version, never half written; a
termination signal is held back until the write is done (:mod:`signals`);
leftover ``*.tmp`` files (only a SIGKILL or a crash leaves them) are ignored
and removed by ``--resume``, which holds the run's lock.

One writer per run directory: :class:`RunLock` takes an exclusive
``fcntl.flock`` on ``RUN_DIR/.lse_fast.lock`` before anything is written
and holds it for the run's life; a second run into the same directory
stops at once naming the holder's pid and host. The kernel releases the
lock when its process ends, however it ends, so a lock file left by a
killed run is stale by construction: the next ``flock`` succeeds.

``--resume`` continues only the run the directory holds: its options are
compared with the configuration recorded in every kept checkpoint and in
metrics.json's provenance (:func:`config_differences`); options outside
:data:`RESULT_NEUTRAL` must not differ. Every file read back (config.yaml,
metrics.json, the checkpoints) is validated first; a malformed one stops
the run with one line naming it, before anything is written.

The run directory (config.yaml, then metrics.json) is created
right after the options are checked, so a run killed at any later moment,
even in its first seconds, leaves a directory that ``--resume`` continues.
A resumed run redoes the round in progress from the last finished round's
checkpoint; every round's randomness is derived from (seed, round, stage),
so the result equals that of an uninterrupted run (on a CPU, exactly).

Fault-injection sites (``faults.point``) mark where the resume tests kill
a run (:mod:`lse_fast.adapt.faults`).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import hashlib
import io
import json
import math
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy
import torch
import yaml

import lse_fast
from lse_fast.adapt import faults, signals
from lse_fast.adapt.config import AdaptConfig, ConfigError, coerce, from_dict

CONFIG = "config.yaml"
METRICS = "metrics.json"
TMP_SUFFIX = ".tmp"
LOCK = ".lse_fast.lock"

# Options that do not change a run's results: they may differ between a run and its --resume. Every
# other AdaptConfig field counts as result-changing (a new field does too, until it is listed here).
RESULT_NEUTRAL = frozenset({
    "run_dir", "cache_dir", "progress", "plots", "export", "tensorboard", "keep_checkpoints", "verify",
    "num_threads",
})

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


def temporary_name(path: Path) -> Path:
    """A temporary file next to `path` whose name no other writer uses
    (NAME.<pid>-<random>.tmp): concurrent writers never share one."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}")


def atomic_write(path, data: bytes, stage: str | None = None, *, durable: bool = True) -> None:
    """Writes `data` to `path` atomically: a reader sees the old file or the
    new one, never a part. A failed write (e.g. ENOSPC) leaves the old file,
    removes its own temporary file and raises an OSError naming `path`. A
    termination signal arriving meanwhile takes effect once the file is in
    place. ``durable=False`` skips the fsyncs (outputs that are made again
    anyway, e.g. plots and exported PNGs): still atomic, not crash-safe."""
    path = Path(path)
    tmp = temporary_name(path)
    with signals.deferred():
        try:
            with open(tmp, "wb") as f:
                half = len(data) // 2
                _write_all(f, data[:half])
                if stage is not None:
                    f.flush()
                    faults.point(stage)
                _write_all(f, data[half:])
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise write_error(path, e) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            _fsync_dir(path.parent)


def atomic_torch_save(obj, path, stage: str | None = None) -> None:
    """torch.save through :func:`atomic_write`."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue(), stage=stage)


def remove_stale_tmp(path: Path) -> list:
    """Removes the temporary files of writes a kill interrupted (called by a
    run holding the directory's lock: no other writer can own them)."""
    gone = []
    for d in (path, path / "checkpoints", path / "plots"):
        if d.is_dir():
            for f in d.glob("*" + TMP_SUFFIX):
                f.unlink(missing_ok=True)
                gone.append(f.name)
    return gone


# --------------------------------------------------------------------------- one writer per run directory
class RunInUse(ConfigError):
    """Another live process holds the run directory's lock."""


_HELD: list = []  # the RunLocks this process holds


def _holder(lock_path: Path) -> str:
    """'pid P on host H since T' from the lock file (written by its holder
    right after it took the lock; read a few times while it is still empty)."""
    for _ in range(20):
        try:
            info = json.loads(lock_path.read_text() or "null")
        except (OSError, ValueError):
            info = None
        if isinstance(info, dict) and "pid" in info:
            return f"pid {info.get('pid')} on host {info.get('host')!s}, since {info.get('started')!s}"
        time.sleep(0.05)
    return "its pid is not recorded yet"


class RunLock:
    """An exclusive ``fcntl.flock`` on ``RUN_DIR/.lse_fast.lock`` (see the
    module docstring). The lock file records the holder (pid, host, start
    time) for the message another run gets; it is left in place when the
    lock is released (only whether it is *held* counts)."""

    def __init__(self, path: Path, fd: int):
        self.path = Path(path)
        self.fd = fd

    @classmethod
    def acquire(cls, path) -> "RunLock":
        path = Path(path)
        lock_path = path / LOCK
        for _ in range(10):
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                raise ConfigError(f"lse_fast.adapt: run directory {str(path)!r} was removed while this run was "
                                  "claiming it; start the run again") from None
            except OSError as e:
                raise write_error(lock_path, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunInUse(
                        f"lse_fast.adapt: run directory {str(path)!r} is in use by another run ({_holder(lock_path)}); "
                        "wait for it to end (or stop it), or choose another --run-dir"
                    ) from None
                raise write_error(lock_path, e) from None
            try:  # the file locked must still be the one at lock_path (a discarded new run unlinks it)
                st, fst = os.stat(lock_path), os.fstat(fd)
                same = (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise RunInUse(f"lse_fast.adapt: run directory {str(path)!r}: its lock file keeps changing; another "
                           "run is starting or stopping there")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as e:
            os.close(fd)
            raise write_error(lock_path, e) from None
        lock = cls(path, fd)
        _HELD.append(lock)
        return lock

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self, *, remove_file: bool = False) -> None:
        if self.fd is None:
            return
        if remove_file:
            (self.path / LOCK).unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None
        if self in _HELD:
            _HELD.remove(self)


def held_locks() -> list:
    """The run-directory locks this process holds now."""
    return list(_HELD)


def release_locks(keep=()) -> None:
    """Releases every lock of this process not in `keep` (the end of one
    driver invocation in a process that may run another)."""
    for lock in list(_HELD):
        if lock not in keep:
            lock.release()


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


@functools.lru_cache(maxsize=1)
def _git_state():
    """(revision, dirty) of the checkout lse_fast is imported from (None when
    not a git checkout); asked once per process."""
    repo = Path(lse_fast.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    return rev.stdout.strip() or None, bool(dirty.stdout.strip()) if rev.returncode == 0 else None


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
    info["git_revision"], info["git_dirty"] = _git_state()
    return info


# --------------------------------------------------------------------------- validation of files read back
_NUMBER = (int, float)
# what a finished round's entry of metrics.json must hold (read by the summary, the plots and --resume)
ROUND_FIELDS = {"round": int, "portion": _NUMBER, "selected": int, "selected_per_class": list, "thresholds": list,
                "loss": _NUMBER + (type(None),), "miou": _NUMBER + (type(None),), "per_class_iou": list,
                "seconds": dict}
SOURCE_ONLY_FIELDS = {"miou": _NUMBER + (type(None),), "per_class_iou": list}
TOP_FIELDS = {"provenance": dict, "rounds": list, "resumed": list, "skipped_files": dict, "finished": bool,
              "stopped": dict, "classes": list}


def _type_name(t) -> str:
    names = [x.__name__ for x in (t if isinstance(t, tuple) else (t,))]
    return " or ".join("null" if n == "NoneType" else {"int": "an integer", "float": "a number", "list": "a list",
                                                       "dict": "an object", "bool": "true/false", "str": "a string"}
                       .get(n, n) for n in dict.fromkeys(names))


def _check_fields(obj, fields: dict, where: str) -> list:
    problems = []
    for name, t in fields.items():
        if name not in obj:
            problems.append(f"{where} has no {name!r}")
        elif not isinstance(obj[name], t) or (t is int and isinstance(obj[name], bool)):
            problems.append(f"{where} {name!r} is {obj[name]!r:.40}, expected {_type_name(t)}")
    return problems


def metrics_problems(data) -> list:
    """What is wrong with a metrics.json read back (empty when it is the
    metrics of a run)."""
    if not isinstance(data, dict):
        return [f"expected an object, got {type(data).__name__}"]
    problems = []
    for name, t in TOP_FIELDS.items():
        if name in data and data[name] is not None and not isinstance(data[name], t):
            problems.append(f"{name!r} is {type(data[name]).__name__}, expected {_type_name(t)}")
    if "rounds" not in data:
        problems.append("it has no 'rounds' list")
    if problems:
        return problems
    so = data.get("source_only")
    if so is not None:
        problems += _check_fields(so, SOURCE_ONLY_FIELDS, "'source_only'") if isinstance(so, dict) else [
            f"'source_only' is {type(so).__name__}, expected an object or null"]
    for i, entry in enumerate(data["rounds"]):
        where = f"rounds[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is {type(entry).__name__}, expected an object")
            continue
        problems += _check_fields(entry, ROUND_FIELDS, where)
        if isinstance(entry.get("round"), int) and entry["round"] != i + 1:
            problems.append(f"{where} is round {entry['round']}, expected round {i + 1} (rounds in order from 1)")
    if data["rounds"] and so is None:
        problems.append(f"it lists {len(data['rounds'])} finished rounds but no source-only result")
    return problems


def read_checkpoint_record(path: Path, round_index: int) -> dict:
    """The configuration recorded in a round checkpoint, after checking that
    the file is one (memory-mapped: the weights are not read). ConfigError
    naming the file and what is wrong otherwise."""
    def bad(what):
        return ConfigError(f"lse_fast.adapt: --resume: checkpoint {str(path)!r} is not a readable round checkpoint "
                           f"({what}); the run cannot continue from it. The file is left as it is: restore it, or "
                           "start a new run")

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001  (torch raises many types for a damaged file)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise bad(f"truncated or damaged: {type(e).__name__}: {first[:160]}") from None
    if not isinstance(state, dict):
        raise bad(f"it holds a {type(state).__name__}, expected a dict with 'round', 'model' and 'config'")
    missing = [k for k in ("round", "model", "config") if k not in state]
    if missing:
        raise bad("no " + ", ".join(repr(k) for k in missing) + " entry")
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise bad("its 'model' entry is not a state dict of tensors")
    if state["round"] != round_index:
        raise bad(f"it records round {state['round']!r} but is the file of round {round_index}")
    if not isinstance(state["config"], dict):
        raise bad(f"its 'config' entry is {type(state['config']).__name__}, expected a mapping of options")
    return state["config"]


# --------------------------------------------------------------------------- configuration of a resumed run
def result_fields() -> list:
    """The AdaptConfig fields that change a run's results (all but
    :data:`RESULT_NEUTRAL`)."""
    return [f.name for f in dataclasses.fields(AdaptConfig) if f.name not in RESULT_NEUTRAL]


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def result_config(config: AdaptConfig) -> dict:
    """The result-changing part of `config` (JSON-ready)."""
    return {name: _norm(getattr(config, name)) for name in result_fields()}


def config_fingerprint(config: AdaptConfig) -> str:
    """sha256 of :func:`result_config`: equal for two configurations exactly
    when they would give the same results."""
    text = json.dumps(result_config(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def config_differences(recorded: dict, config: AdaptConfig, source: str) -> list:
    """[(field, recorded value, value now)] for the result-changing fields
    where `config` differs from the `recorded` one (a field missing there
    counts as its default: it did not exist when the run was made)."""
    defaults = {f.name: f.default for f in dataclasses.fields(AdaptConfig)}
    out = []
    for name in result_fields():
        raw = recorded.get(name, defaults[name])
        try:
            old = _norm(coerce(name, raw, source))
        except ConfigError:
            old = raw
        new = _norm(getattr(config, name))
        if old != new:
            out.append((name, old, new))
    return out


def _fmt(v) -> str:
    if isinstance(v, list):
        return "x".join(str(x) for x in v)
    return repr(v) if isinstance(v, str) or v is None else str(v)


def _flag(name: str, value) -> str:
    """The command-line form of an option value (for a suggested command)."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + name.replace("_", "-")
    return f"{flag} {'x'.join(map(str, value)) if isinstance(value, list) else value}"


class Run:
    """A run directory. A Run that writes (not a distributed follower) holds
    the directory's :class:`RunLock` until :meth:`close`."""

    def __init__(self, path: Path, config: AdaptConfig, metrics: dict, *, created: bool = False, lock=None):
        self.path = Path(path)
        self.config = config
        self.metrics = metrics
        self.created = created  # this invocation made the directory (removed again by discard())
        self.lock = lock
        self.wrote = set()  # files this run wrote (discard() removes only these)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Releases the run directory's lock (the run is over)."""
        if self.lock is not None:
            self.lock.release()

    def _make_subdirs(self):
        try:
            for sub in ("checkpoints", "plots"):
                d = self.path / sub
                if not d.is_dir():
                    d.mkdir(parents=True, exist_ok=True)
                    self.wrote.add(d)
        except OSError as e:
            raise write_error(self.path, e) from None

    # -- creation / resume ------------------------------------------------
    @staticmethod
    def _entries(path: Path) -> list:
        """Names in `path`, leftover temporary files and the lock file left out."""
        return sorted(e.name for e in path.iterdir() if not e.name.endswith(TMP_SUFFIX) and e.name != LOCK)

    @staticmethod
    def check_new(config: AdaptConfig) -> None:
        """ConfigError when --run-dir already holds a run or other files, or
        cannot be written (checked before anything is written, and again
        once the lock is held)."""
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
        """metrics.json of an existing run directory, validated (read only);
        None when it is missing and `missing_ok` (a run killed before writing
        it). ConfigError naming the file and what is wrong."""
        mfile = Path(path) / METRICS
        if not mfile.is_file():
            if missing_ok:
                return None
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: no {METRICS} there (not a run directory)")
        keep = "; the file is left as it is: repair it or restore it from a backup, or start a new run"
        try:
            data = json.loads(mfile.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"lse_fast.adapt: --resume {str(path)!r}: {METRICS} is not valid JSON ({e}){keep}"
            ) from None
        except OSError as e:
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: cannot read {METRICS} ({e.strerror})") from None
        problems = metrics_problems(data)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: {METRICS} is not the metrics of a run: "
                              + "; ".join(problems[:3]) + more + keep)
        return data

    @staticmethod
    def _fresh_metrics(config: AdaptConfig) -> dict:
        prov = provenance(config.seed)
        prov["config"] = result_config(config)
        prov["config_fingerprint"] = config_fingerprint(config)
        return {"provenance": prov, "source_only": None, "rounds": []}

    @classmethod
    def create(cls, config: AdaptConfig) -> "Run":
        """A new run directory holding config.yaml and metrics.json (the
        first things written, so a kill from here on leaves a resumable
        directory). The directory's lock is taken first; a directory another
        run holds, or one that came to hold a run meanwhile, is refused."""
        cls.check_new(config)
        created = False
        if config.run_dir:
            path = Path(config.run_dir)
            try:
                path.mkdir(parents=True)
                created = True
            except FileExistsError:
                pass  # an empty directory given as --run-dir (or another run's, which the lock finds out)
            except OSError as e:
                raise write_error(path, e) from None
        else:  # runs/<timestamp>[-i]: the first name no other run has made (mkdir is the atomic claim)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for i in range(1000):
                path = Path("runs") / (stamp if i == 0 else f"{stamp}-{i}")
                try:
                    path.mkdir(parents=True)
                    created = True
                    break
                except FileExistsError:
                    continue
                except OSError as e:
                    raise write_error(path, e) from None
            else:
                raise ConfigError(f"lse_fast.adapt: runs/{stamp}-0..999 all exist; give --run-dir")
        lock = RunLock.acquire(path)
        config.run_dir = str(path)
        run = cls(path, config, cls._fresh_metrics(config), created=created, lock=lock)
        try:
            cls.check_new(config)  # under the lock: a run that finished here since the first check
            run.save_config()
            run.save_metrics()
            run._make_subdirs()
        except BaseException:
            run.discard()
            raise
        faults.point("start")
        return run

    def discard(self) -> None:
        """Removes what this run wrote (a run stopped by a bad option or
        dataset before its first result leaves nothing behind), then
        releases the lock. Removes nothing without holding the lock."""
        if self.lock is None or not self.lock.held:
            return
        for p in sorted(self.wrote, key=lambda q: len(q.parts), reverse=True):
            if p.is_dir():
                if not any(p.iterdir()):
                    p.rmdir()
            else:
                p.unlink(missing_ok=True)
        self.wrote.clear()
        empty = self.created and self.path.is_dir() and not self._entries(self.path) and not any(
            e.name.endswith(TMP_SUFFIX) for e in self.path.iterdir())
        self.lock.release(remove_file=empty)
        if empty:
            try:
                self.path.rmdir()
            except OSError:
                pass  # another run came in meanwhile: its directory now

    @staticmethod
    def _check_dir(path: Path) -> None:
        """ConfigError unless `path` is a run directory (has config.yaml)."""
        if not path.is_dir():
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: no such directory")
        if not (path / CONFIG).is_file():
            if not Run._entries(path):
                raise ConfigError(
                    f"lse_fast.adapt: --resume {str(path)!r}: the directory is empty, not a run directory (a "
                    "run killed before it wrote config.yaml leaves it so): start the run again without --resume"
                )
            raise ConfigError(f"lse_fast.adapt: --resume {str(path)!r}: no {CONFIG} there (not a run directory)")

    @classmethod
    def lock_for_resume(cls, path) -> RunLock:
        """The lock of the run directory `path` (checked to be one first, so
        nothing is written into a folder that is not)."""
        path = Path(path)
        cls._check_dir(path)
        return RunLock.acquire(path)

    @staticmethod
    def load_config(path) -> dict:
        """config.yaml of the run at `path`, every value checked (ConfigError
        naming the file otherwise); without run_dir."""
        path = Path(path)
        Run._check_dir(path)
        cfg = path / CONFIG
        where = f"--resume {str(path)!r}: {CONFIG}"
        keep = "; the file is left as it is: repair it, or start a new run"
        try:
            data = yaml.safe_load(cfg.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            first = " ".join(str(e).split())
            raise ConfigError(f"lse_fast.adapt: {where} is not valid YAML ({first}){keep}") from None
        if not isinstance(data, dict) or not data:
            what = "is empty" if data is None or data == {} else f"holds a {type(data).__name__}"
            raise ConfigError(f"lse_fast.adapt: {where} {what}; it must hold the run's mapping of options{keep}")
        data.pop("run_dir", None)
        for k, v in data.items():
            coerce(str(k), v, f"the run's config.yaml ({str(cfg)!r})")
        return data

    @classmethod
    def check_resumable(cls, path, config: AdaptConfig | None = None, given=()):
        """metrics.json of the run at `path` (None when a kill came before it
        was written), every file read back validated; with `config`, also
        that it is the configuration the run was made with (ConfigError
        listing the differing fields otherwise). `given`: the option names
        set on this command line (named as such in the message)."""
        path = Path(path)
        metrics = cls.read_metrics(path, missing_ok=True)
        if metrics is None:
            return None
        done = len(metrics.get("rounds", []))
        recorded = []  # (what, configuration)
        prov = metrics.get("provenance") or {}
        if isinstance(prov.get("config"), dict):
            recorded.append((f"{METRICS} provenance", prov["config"]))
        elif "seed" in prov:
            recorded.append((f"{METRICS} provenance", {"seed": prov["seed"]}))
        for r in range(done + 1):
            ckpt = path / "checkpoints" / f"round_{r}.pt"
            if ckpt.is_file():
                recorded.append((f"checkpoints/round_{r}.pt", read_checkpoint_record(ckpt, r)))
            elif r == done and done:
                raise ConfigError(
                    f"lse_fast.adapt: --resume {str(path)!r}: round {done} is finished but its checkpoint "
                    f"{str(ckpt)!r} is missing"
                )
        if config is not None:
            cls._compare(path, config, recorded, set(given))
        return metrics

    @staticmethod
    def _compare(path: Path, config: AdaptConfig, recorded: list, given: set) -> None:
        diffs, where = {}, {}
        for what, rec in recorded:
            if "seed" in rec and len(rec) == 1:  # an older run: only the seed is recorded in the provenance
                d = [x for x in config_differences({**result_config(config), **rec}, config, what)]
            else:
                d = config_differences(rec, config, what)
            for name, old, new in d:
                if name not in diffs:
                    diffs[name], where[name] = (old, new), what
        if not diffs:
            return
        parts = []
        for name, (old, new) in diffs.items():
            now = "given with --resume" if name in given else "config.yaml"
            parts.append(f"{name} {_fmt(old)} -> {_fmt(new)} ({now}; recorded in {where[name]})")
        flags = " ".join(_flag(n, diffs[n][1]) for n in diffs if n in given)
        raise ConfigError(
            f"lse_fast.adapt: --resume {str(path)!r}: the configuration differs from the one the run was made "
            f"with: {', '.join(parts)}; a resumed run keeps every option that changes results (only "
            f"{', '.join(sorted(RESULT_NEUTRAL - {'run_dir'}))} may change). To resume, undo the change; to run "
            f"with it, start a new run: python -m lse_fast.adapt --config {str(path / CONFIG)} --run-dir NEW_DIR"
            + (f" {flags}" if flags else "")
        )

    @classmethod
    def resume(cls, path, config: AdaptConfig, lock: RunLock | None = None) -> "Run":
        """Continues the run at `path` (its lock taken here unless `lock` is
        the one already held; every file validated before anything is
        written)."""
        path = Path(path)
        own = lock is None
        if own:
            lock = cls.lock_for_resume(path)
        try:
            metrics = cls.check_resumable(path)
            if metrics is None:  # killed between config.yaml and metrics.json: nothing done yet
                metrics = cls._fresh_metrics(config)
            remove_stale_tmp(path)
            done = len(metrics.get("rounds", []))
            metrics.setdefault("rounds", [])
            metrics.setdefault("source_only", None)
            config.run_dir = str(path)
            run = cls(path, config, metrics, lock=lock)
            run._make_subdirs()
            prov = provenance(config.seed)
            prov["config_fingerprint"] = config_fingerprint(config)
            run.metrics.setdefault("resumed", []).append({"after_round": done, "provenance": prov})
            run.save_config()
            run.save_metrics()
        except BaseException:
            if own:
                lock.release()
            raise
        return run

    # -- files ----------------------------------------------------------------
    def _write(self, path: Path, data: bytes, stage=None):
        existed = path.exists()
        atomic_write(path, data, stage=stage)
        if not existed:
            self.wrote.add(path)

    def save_config(self):
        self._write(self.path / CONFIG, yaml.safe_dump(self.config.to_dict(), sort_keys=False).encode())

    def save_metrics(self):
        self._write(self.path / METRICS, json.dumps(_clean(self.metrics), indent=1).encode(), stage="metrics")

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
        finished only once both are on disk (a termination signal meanwhile
        takes effect once the round is recorded)."""
        with signals.deferred():
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


__all__ = [
    "RESULT_NEUTRAL", "Run", "RunInUse", "RunLock", "config_differences", "config_fingerprint", 
    "from_dict", "held_locks", "metrics_problems", "provenance", "read_checkpoint_record", "release_locks",
    "result_config", "result_fields",
]
