"""scripts/sanitize.sh without a GPU: it must stop with a clear message when
compute-sanitizer or a CUDA GPU is missing, and (with stand-ins for both)
write a summary that tells a clean run from one with errors."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "sanitize.sh"

FAKE_SANITIZER = r"""#!/usr/bin/env bash
# stand-in for compute-sanitizer: writes a log like the real one, then runs the command
log=/dev/null; code=1
while [ $# -gt 0 ]; do
  case "$1" in
    --log-file) log=$2; shift 2 ;;
    --error-exitcode) code=$2; shift 2 ;;
    --tool|--target-processes|--print-limit|--leak-check) shift 2 ;;
    --version) echo "Compute Sanitizer stand-in"; exit 0 ;;
    *) break ;;
  esac
done
"$@"; rc=$?
if [ "${FAKE_ERRORS:-0}" -gt 0 ]; then
  printf '========= Invalid __global__ read of size 4 bytes\n=========     in void lse::cuda::score_kernel<float>(...)\n' >"$log"
  echo "========= ERROR SUMMARY: $FAKE_ERRORS errors" >>"$log"; exit "$code"
fi
echo "========= ERROR SUMMARY: 0 errors" >"$log"; exit $rc
"""

FAKE_PYTHON = r"""#!/usr/bin/env bash
# stand-in for python: a GPU for the check, a passing test run for pytest
if [ "$1" = "-" ]; then cat >/dev/null; echo "NVIDIA H100 80GB HBM3"; exit 0; fi
echo "12 passed, 400 deselected in 3.21s"
"""


def _exe(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _run(tmp_path, *args, **env):
    full = dict(os.environ, SANITIZE_OUT=str(tmp_path / "summary.txt"), SANITIZE_LOGS=str(tmp_path / "logs"), **env)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=120)


def test_missing_compute_sanitizer_is_named(tmp_path):
    p = _run(tmp_path, COMPUTE_SANITIZER=str(tmp_path / "nowhere"), PATH="/usr/bin:/bin", CUDA_HOME=str(tmp_path))
    assert p.returncode == 2
    if Path("/usr/local/cuda/bin/compute-sanitizer").exists():
        pytest.skip("this machine has compute-sanitizer at /usr/local/cuda/bin")
    assert "compute-sanitizer not found" in p.stderr and "COMPUTE_SANITIZER=" in p.stderr


def test_missing_gpu_is_named(tmp_path):
    san = _exe(tmp_path / "cs", FAKE_SANITIZER)
    p = _run(tmp_path, COMPUTE_SANITIZER=san, PYTHON=_exe(tmp_path / "py", "#!/bin/sh\necho 'torch sees no CUDA GPU' >&2; exit 1\n"))
    assert p.returncode == 2 and "torch sees no CUDA GPU" in p.stderr
    assert not (tmp_path / "summary.txt").exists()


def test_bad_argument(tmp_path):
    p = _run(tmp_path, "memchek")
    assert p.returncode == 2 and "unknown argument 'memchek'" in p.stderr


@pytest.mark.parametrize("errors", [0, 3])
def test_summary_tells_clean_from_errors(tmp_path, errors):
    san = _exe(tmp_path / "cs", FAKE_SANITIZER)
    py = _exe(tmp_path / "py", FAKE_PYTHON)
    p = _run(tmp_path, "memcheck", "initcheck", COMPUTE_SANITIZER=san, PYTHON=py, FAKE_ERRORS=str(errors))
    summary = (tmp_path / "summary.txt").read_text()
    assert "gpu: NVIDIA H100 80GB HBM3" in summary and "Compute Sanitizer stand-in" in summary
    assert "racecheck" not in summary.split("\n\n", 1)[1]  # only the tools asked for
    if errors:
        assert p.returncode == 1
        assert summary.count("ERRORS FOUND") == 2
        assert "errors reported: 3, of which in lse::cuda kernels: 1" in summary
    else:
        assert p.returncode == 0, p.stderr
        assert "== memcheck: clean" in summary and "== initcheck: clean" in summary
        assert "pytest: 12 passed, 400 deselected" in summary
