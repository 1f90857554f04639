"""Packaging and build behaviour: import errors, the CUDA build decision,
CPU-only builds asked for CUDA tensors."""

import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import lse_fast
from lse_fast import _extension

ROOT = Path(__file__).resolve().parents[1]


def load_setup_module():
    spec = importlib.util.spec_from_file_location("lse_fast_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # __name__ != "__main__": defines, does not build
    return module


def test_import_without_extension_says_how_to_build(tmp_path):
    pkg = tmp_path / "lse_fast"
    shutil.copytree(ROOT / "lse_fast", pkg, ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
    code = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import lse_fast\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "lse_fast's compiled extension (lse_fast._C) is not built" in proc.stderr
    assert "pip install --no-build-isolation -e ." in proc.stderr
    assert proc.stderr.count("Traceback") <= 2  # one chained error, not a cascade


@pytest.mark.parametrize(
    "env,torch_cuda,nvcc,expected",
    [
        ({}, None, "/usr/bin/nvcc", False),  # CPU torch: nvcc alone is not enough
        ({}, "13.0", None, False),  # CUDA torch without nvcc
        ({}, "13.0", "/usr/local/cuda/bin/nvcc", True),
        ({"FORCE_CUDA": "1"}, None, None, True),
        ({"FORCE_CUDA": "0"}, "13.0", "/usr/local/cuda/bin/nvcc", False),
    ],
)
def test_cuda_build_decision(env, torch_cuda, nvcc, expected):
    build, reason = load_setup_module().decide_cuda(env, torch_cuda, nvcc)
    assert build is expected and reason


def test_cuda_build_decision_rejects_bad_force_value():
    with pytest.raises(SystemExit, match="FORCE_CUDA must be 0 or 1"):
        load_setup_module().decide_cuda({"FORCE_CUDA": "yes"}, None, None)


def test_setup_never_probes_for_a_gpu():
    text = (ROOT / "setup.py").read_text()
    assert "is_available" not in text and "device_count" not in text


def test_find_nvcc_prefers_cuda_home(tmp_path):
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir()
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(0o755)
    assert load_setup_module().find_nvcc({"CUDA_HOME": str(tmp_path), "PATH": ""}) == str(nvcc)
    assert load_setup_module().find_nvcc({"PATH": ""}) is None


def test_built_with_cuda_matches_torch():
    assert isinstance(lse_fast.built_with_cuda(), bool)
    if torch.version.cuda is None:
        assert lse_fast.built_with_cuda() is False


def test_cpu_only_build_rejects_cuda_tensor_plainly(monkeypatch):
    monkeypatch.setattr(_extension, "built_with_cuda", lambda: False)
    fake_cuda_tensor = types.SimpleNamespace(device=torch.device("cuda", 0))
    with pytest.raises(RuntimeError, match="lse_fast.score: got a CUDA tensor, but this lse_fast build has CPU kernels only"):
        _extension.require_kernels_for("score", fake_cuda_tensor)
    _extension.require_kernels_for("score", torch.empty(1))  # CPU tensors pass


def test_ops_are_registered_once_with_schema():
    schema = str(torch.ops.lse_fast.score.default._schema)
    assert schema.startswith("lse_fast::score(Tensor logits) -> (Tensor confidence, Tensor label")


def test_import_reaches_every_public_subpackage_lazily():
    # A fresh interpreter: `import lse_fast` alone must not import the
    # subpackages (nor DALI or matplotlib), and attribute access must reach them.
    code = (
        "import sys\n"
        "import lse_fast\n"
        "lazy = ('adapt', 'data', 'evaluate', 'metrics', 'models', 'selection')\n"
        "assert not [m for m in lazy if 'lse_fast.' + m in sys.modules], 'imported eagerly'\n"
        "assert not [m for m in sys.modules if m.startswith(('nvidia.dali', 'matplotlib'))], 'heavy import'\n"
        "assert set(lazy) <= set(dir(lse_fast)) and set(lazy) <= set(lse_fast.__all__)\n"
        "assert callable(lse_fast.models.build) and callable(lse_fast.data.loader)\n"
        "assert callable(lse_fast.evaluate.evaluate) and callable(lse_fast.selection.select)\n"
        "assert callable(lse_fast.metrics.SegmentationMetric) and callable(lse_fast.adapt.main)\n"
        "assert lse_fast.models is sys.modules['lse_fast.models']\n"
        "assert not [m for m in sys.modules if m.startswith('nvidia.dali')], 'DALI imported before a loader'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_unknown_attribute_is_a_plain_attribute_error():
    with pytest.raises(AttributeError, match="module 'lse_fast' has no attribute 'modles'"):
        lse_fast.modles  # noqa: B018
    assert not hasattr(lse_fast, "nope")


def _fake_checkout(tmp_path, requirements="numpy>=1.0\n"):
    """A checkout with scripts/setup.sh, requirement files, sources and a
    stand-in lse_fast whose 'built extension' is newer than every source."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    (root / "requirements.txt").write_text("# runtime\n" + requirements)
    (root / "requirements-dev.txt").write_text("pytest>=1\n")
    (root / "setup.py").write_text("raise SystemExit('not to be run by a dry run')\n")
    (root / "csrc" / "core").mkdir(parents=True)
    (root / "csrc" / "core" / "op.h").write_text("// source\n")
    (root / "lse_fast").mkdir()
    (root / "lse_fast" / "__init__.py").write_text("__version__ = '0'\ndef built_with_cuda():\n    return False\n")
    so = root / "lse_fast" / "_C.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"")
    for p in (root / "setup.py", root / "csrc" / "core" / "op.h"):
        os.utime(p, (1_000_000, 1_000_000))
    os.utime(so, (2_000_000, 2_000_000))
    return root


def _dry_run(root, *args, pythonpath=None):
    env = dict(os.environ, PYTHON=sys.executable)
    # `import lse_fast` resolves to the checkout, as after `pip install -e .` (or to `pythonpath`)
    env["PYTHONPATH"] = str(pythonpath or root)
    return subprocess.run(["bash", str(root / "scripts" / "setup.sh"), "--dry-run", *args], capture_output=True,
                          text=True, env=env, cwd=root.parent)


def test_setup_skips_pip_and_build_when_everything_is_current(tmp_path):
    root = _fake_checkout(tmp_path)
    proc = _dry_run(root, "--dev")
    assert proc.returncode == 0, proc.stderr
    assert "skip pip: every requirement of requirements.txt requirements-dev.txt is satisfied" in proc.stdout
    assert "skip build" in proc.stdout
    assert "would run" not in proc.stdout


def test_setup_rebuilds_when_a_source_changed(tmp_path):
    root = _fake_checkout(tmp_path)
    os.utime(root / "csrc" / "core" / "op.h", (3_000_000, 3_000_000))
    proc = _dry_run(root)
    assert proc.returncode == 0, proc.stderr
    assert "skip pip" in proc.stdout
    (line,) = [ln for ln in proc.stdout.splitlines() if "would run" in ln]
    assert "pip install --quiet --no-build-isolation -e ." in line and "csrc/core/op.h is newer than" in line
    os.utime(root / "csrc" / "core" / "op.h", (1_000_000, 1_000_000))
    os.utime(root / "setup.py", (3_000_000, 3_000_000))
    assert "setup.py is newer than" in _dry_run(root).stdout


def test_setup_builds_without_extension_or_when_imported_from_elsewhere(tmp_path):
    root = _fake_checkout(tmp_path)
    other = tmp_path / "other"
    shutil.copytree(root / "lse_fast", other / "lse_fast")
    proc = _dry_run(root, pythonpath=other)  # lse_fast imports from another checkout
    assert f"-e . (lse_fast does not import from this checkout (import gives: {other.resolve()}/lse_fast))" in proc.stdout
    (root / "lse_fast" / "__init__.py").write_text("raise ImportError('built for another torch')\n")
    proc = _dry_run(root)  # or does not import at all
    assert "-e . (lse_fast does not import from this checkout (import gives: an error))" in proc.stdout
    (root / "lse_fast" / "_C.cpython-311-x86_64-linux-gnu.so").unlink()
    assert "-e . (no built extension lse_fast/_C*.so)" in _dry_run(root).stdout


def test_setup_runs_pip_only_for_unmet_requirements(tmp_path):
    root = _fake_checkout(tmp_path, requirements="numpy<1.0\nlse-fast-no-such-package>=1\nnumpy>=1.0; python_version < '3'\n")
    proc = _dry_run(root, "--dev")
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if "would run" in ln and "-r" in ln]
    assert "pip install --quiet -r requirements.txt -r requirements-dev.txt" in line
    assert "numpy<1.0 (installed " in line and "lse-fast-no-such-package>=1 (not installed)" in line
    assert "python_version" not in line  # a requirement whose marker does not apply is not unmet
    assert "skip build" in proc.stdout


def test_setup_rejects_unknown_options(tmp_path):
    root = _fake_checkout(tmp_path)
    proc = _dry_run(root, "--devv")
    assert proc.returncode == 2
    assert "setup.sh: unknown option '--devv' (expected --dev and/or --dry-run)" in proc.stderr
