"""Install paths that explain themselves (docs/install.md): setup.py without
torch, the torch an extension was built against, `python -m lse_fast
--version`, and a missing optional dependency naming its extra. The full
wheel check (build, fresh venv, all four ops) is scripts/check_wheel.sh."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lse_fast import _extension, _extras

ROOT = Path(__file__).resolve().parents[1]

# Runs a module or script with some top-level modules made unfindable, as in
# an environment where they are not installed. argv: hidden,names  -m|path  args...
HIDE = """
import runpy, sys
hidden = set(sys.argv[1].split(","))
class Hide:
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in hidden or not hasattr(self.inner, "find_spec"):
            return None
        return self.inner.find_spec(name, path, target)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
kind, target = sys.argv[2], sys.argv[3]
if kind == "-m":
    sys.argv[:] = ["-m"] + sys.argv[4:]  # what `python -m` sets while importing the package
    runpy._run_module_as_main(target)
else:
    sys.argv[:] = [target] + sys.argv[4:]
    runpy.run_path(target, run_name="__main__")
"""


def run_hidden(hidden, kind, target, *args, cwd=ROOT):
    return subprocess.run([sys.executable, "-c", HIDE, ",".join(hidden), kind, target, *args],
                          capture_output=True, text=True, cwd=cwd)


def test_setup_without_torch_says_what_to_run_without_a_traceback():
    proc = run_hidden(["torch"], "path", str(ROOT / "setup.py"), "--version")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "lse_fast setup: cannot import torch in the build environment (No module named 'torch')" in proc.stderr
    assert "pip install --no-build-isolation ." in proc.stderr
    assert "pip wheel --no-build-isolation --no-deps -w dist ." in proc.stderr


@pytest.mark.parametrize(
    "built,built_cuda,running,running_cuda,refused",
    [
        ("2.13.0+cpu", None, "2.13.0+cpu", None, False),
        ("2.13.0+cpu", None, "2.13.0+cu130", "13.0", False),  # CPU kernels run under a CUDA torch of that release
        ("2.13.0", "13.0", "2.13.0+cu130", "13.0", False),
        ("2.13.0+cpu", None, "2.14.1", "13.0", True),
        ("2.13.0", None, "2.13.1", None, True),
        ("2.13.0+cu130", "13.0", "2.13.0+cpu", None, True),
        ("2.13.0+cu130", "13.0", "2.13.0+cu126", "12.6", True),
    ],
)
def test_torch_mismatch(built, built_cuda, running, running_cuda, refused):
    message = _extension.torch_mismatch(built, built_cuda, running, running_cuda)
    assert (message is not None) is refused
    if refused:
        assert "\n" not in message
        assert f"lse_fast was built against torch {built}" in message and f"but torch {running}" in message
        assert f"install torch=={built.split('+')[0]}" in message and "pip install --no-build-isolation" in message


def test_import_refuses_another_torch_in_one_line(tmp_path):
    pkg = tmp_path / "lse_fast"
    shutil.copytree(ROOT / "lse_fast", pkg, ignore=shutil.ignore_patterns("__pycache__", "_build_info.py"))
    (pkg / "_build_info.py").write_text("VERSION = '0.1.0'\nTORCH_VERSION = '1.0.0'\nTORCH_CUDA = None\n"
                                        "WITH_CUDA = False\nCUDA_ARCHS = ''\n")
    code = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "try:\n"
        "    import lse_fast\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "    print(sys.modules['lse_fast._build_info'].__file__)\n"
        "    print('lse_fast._C' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    message, info_file, loaded = proc.stdout.splitlines()
    assert message.startswith(f"lse_fast was built against torch 1.0.0 but torch {torch.__version__}")
    assert "install torch==1.0.0, or rebuild lse_fast against this torch" in message
    assert info_file == str(pkg / "_build_info.py")
    assert loaded == "False"  # refused before the extension is loaded


def test_version_names_build_and_both_torches():
    proc = subprocess.run([sys.executable, "-m", "lse_fast", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines()[1:])
    assert proc.stdout.startswith("lse_fast 0.1.0\n")
    assert lines["build"] == ("CPU only" if not torch.ops.lse_fast.built_with_cuda() else lines["build"])
    assert lines["built with"].startswith("torch ") or lines["built with"].startswith("unknown")
    assert lines["running"].startswith(f"torch {torch.__version__}")
    assert lines["CPU ISA path"] in ("avx2", "portable")
    assert set(lines) == {"build", "built with", "running", "CPU ISA path", "location"}


@pytest.mark.parametrize(
    "hidden,module,expected",
    [
        ("yaml", "lse_fast.adapt", "error: lse_fast.adapt needs PyYAML (the lse_fast[driver] extra), which is not "
                                   "installed: pip install 'lse_fast[driver]' (or pip install PyYAML)"),
        ("PIL", "lse_fast.evaluate", "error: lse_fast.evaluate needs pillow (the lse_fast[data] extra)"),
        ("numpy", "lse_fast.adapt", "needs numpy, a core dependency of lse_fast, which is not installed: pip install numpy"),
    ],
)
def test_missing_extra_is_one_line_naming_it(hidden, module, expected):
    proc = run_hidden([hidden], "-m", module, "--help")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    # the last line (torch itself warns first when numpy is missing)
    assert expected in proc.stderr.strip().splitlines()[-1], proc.stderr


def test_missing_extra_in_library_use_is_a_module_not_found_error_naming_it(tmp_path):
    script = tmp_path / "user.py"
    script.write_text("import lse_fast, lse_fast.adapt\n")
    proc = run_hidden(["yaml"], "path", str(script))
    assert proc.returncode == 1
    assert "ModuleNotFoundError: lse_fast.adapt needs PyYAML (the lse_fast[driver] extra)" in proc.stderr


def test_other_importers_get_the_usual_error():
    finder = _extras.MissingExtraFinder()
    assert finder.find_spec("yaml") is None  # imported from this test module, not from lse_fast
    assert finder.find_spec("not_ours") is None
    assert _extras.missing_message("matplotlib.pyplot").startswith("lse_fast needs matplotlib (the lse_fast[driver] extra)")
    assert _extras.missing_message("scipy") is None


def test_declared_extras_cover_the_requirement_files():
    import importlib.util

    spec = importlib.util.spec_from_file_location("lse_fast_setup", ROOT / "setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)  # defines, does not build (imports setuptools before anything imports distutils)
    from setuptools._vendor.packaging.requirements import Requirement
    declared = {Requirement(r).name.lower() for reqs in setup.EXTRAS.values() for r in reqs} | {"numpy", "torch"}
    build_tools = {"ninja"}
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                req = Requirement(line).name.lower()
                assert req in declared | build_tools, f"{name}: {req} is in no extra of setup.py's EXTRAS"
    assert setup.torch_requirement("2.13.0+cpu") == "torch==2.13.0"
    assert setup.torch_requirement("2.14.1") == "torch==2.14.1"
