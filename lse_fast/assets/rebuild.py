"""``python -m lse_fast.assets.rebuild``: remakes the shipped source model of
the built-in benchmark (``synthetic_source_small_deeplab.pt``) and its
manifest by running the driver's own source stage and source-only
evaluation with the default options (``--source-model train``).

The file is the float32 state dict the default run trains; on the same CPU
instruction set (oneDNN takes other paths on AVX2 and AVX-512 machines),
torch version and thread count it comes out bit for bit the same, which
the manifest records (docs/driver.md, "The shipped source model").
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy
import torch

import lse_fast
from lse_fast.adapt.algorithm import source_only
from lse_fast.adapt.cli import prepare
from lse_fast.adapt.source import SHIPPED_MANIFEST, SHIPPED_MODEL, sha256_file, source_fingerprint

# source images whose rendered pixels the manifest records (the test re-renders them: a changed generator
# makes another source domain, so the shipped model would no longer be the one this code trains)
PROBE_IMAGES = (0, 1, 199)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def render_digest(size, indices=PROBE_IMAGES, seed=0) -> str:
    """sha256 over the rendered (image, label) arrays of source images
    `indices` of the synthetic benchmark (content seed `seed`)."""
    from lse_fast.data import synthetic

    h = hashlib.sha256()
    for i in indices:
        img, lab = synthetic.render([seed, 0, i], tuple(size), "source")
        h.update(numpy.ascontiguousarray(img).tobytes())
        h.update(numpy.ascontiguousarray(lab).tobytes())
    return h.hexdigest()


def save_state(state: dict, path: Path) -> None:
    """torch.save of {"model": state} through a buffer: the archive's inner
    folder is then always "archive" (written to a file, torch names it after
    the file), so equal tensors give equal bytes; written atomically."""
    buf = io.BytesIO()
    torch.save({"model": {k: v.detach().cpu().contiguous() for k, v in state.items()}}, buf)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lse_fast.assets.rebuild", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(SHIPPED_MODEL.parent),
                    help="folder for the .pt file and its .json manifest (default: the package's assets folder)")
    ap.add_argument("--cache-dir", default=None,
                    help="cache_dir of the run (default: a fresh temporary folder, so the model is trained here; "
                         "a folder holding the default run's cached source model reuses it)")
    ap.add_argument("--check", action="store_true",
                    help="build into a temporary folder instead and compare with the shipped file (exit 1 when the "
                         "bytes differ; expected only on another CPU instruction set, torch version or thread count)")
    args = ap.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory(prefix="lse_fast_check_") as tmp:
            build(tmp, args.cache_dir)
            made = json.loads((Path(tmp) / SHIPPED_MANIFEST.name).read_text())
        shipped = json.loads(SHIPPED_MANIFEST.read_text())
        same = made["sha256"] == shipped["sha256"]
        print(f"[rebuild] {'identical to' if same else 'DIFFERENT from'} the shipped {SHIPPED_MODEL.name} "
              f"(sha256 {made['sha256']} vs {shipped['sha256']}; source-only mIoU "
              f"{100 * made['source_only_miou']:.2f}% vs {100 * shipped['source_only_miou']:.2f}%)\n"
              f"  here:    {json.dumps(made['made_with'], sort_keys=True)}\n"
              f"  shipped: {json.dumps(shipped['made_with'], sort_keys=True)}", flush=True)
        return 0 if same else 1
    build(args.out, args.cache_dir)
    return 0


def build(out_dir, cache_dir=None, options=()) -> dict:
    """Trains (or takes from `cache_dir`) the default configuration's source
    model and writes it and its manifest into `out_dir`; returns the manifest.
    `options`: further driver options (the tests build a tiny model)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: lse_fast.assets.rebuild: --out {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lse_fast_rebuild_") as tmp:
        cache = str(cache_dir or Path(tmp) / "cache")
        run, ctx, model, initial = prepare(["--source-model", "train", "--rounds", "1", "--no-plots",
                                            "--run-dir", str(Path(tmp) / "run"), "--cache-dir", cache, *options])
        try:
            source_only(run, ctx, model, initial)
        finally:
            run.close()
        cfg, so = run.config, run.metrics["source_only"]
    model_path = out / SHIPPED_MODEL.name
    save_state(model.state_dict(), model_path)
    manifest = {
        "file": model_path.name,
        "sha256": sha256_file(model_path),
        "bytes": model_path.stat().st_size,
        "dtype": "float32",
        "fingerprint": source_fingerprint(cfg),
        "source_render_sha256": render_digest(cfg.image_size),
        "source_render_images": list(PROBE_IMAGES),
        "source_only_miou": so["miou"],
        # null for a class absent from the val split (NaN IoU): strict JSON has no NaN
        "source_only_per_class_iou": [None if math.isnan(v) else v for v in so["per_class_iou"]],
        "val_images": len(ctx.val),
        "made_with": {
            "lse_fast": lse_fast.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d"), "command": "python -m lse_fast.assets.rebuild",
        },
    }
    manifest_path = out / SHIPPED_MANIFEST.name
    tmp_manifest = manifest_path.with_name(manifest_path.name + f".{os.getpid()}.tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp_manifest, manifest_path)
    print(f"[rebuild] {model_path} ({manifest['bytes']} bytes, sha256 {manifest['sha256']}), source-only mIoU "
          f"{100 * so['miou']:.2f}%, manifest {manifest_path}; {time.perf_counter() - t0:.0f} s", flush=True)
    return manifest


if __name__ == "__main__":
    sys.exit(main())
