#!/usr/bin/env bash
# Installs everything, then runs all tests: the C++ unit tests of the
# torch-free core (CTest; compiles every CUDA kernel when nvcc is found) and
# the Python test suite. CUDA tests skip themselves without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

bash scripts/setup.sh --dev

cmake -S . -B build/cmake -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build/cmake --parallel "${MAX_JOBS:-2}"
ctest --test-dir build/cmake --output-on-failure

# The library install: a wheel built from this checkout, installed into a
# fresh venv with the installed torch, runs all four ops from outside the tree.
bash scripts/check_wheel.sh

"$PY" -m pytest tests "$@"

# The op tests again on the portable (non-AVX2) CPU path at one thread: what
# older and non-x86 CPUs run (LSE_FAST_CPU_ISA, docs/build.md).
LSE_FAST_CPU_ISA=portable OMP_NUM_THREADS=1 "$PY" -m pytest -q tests/test_score.py \
  tests/test_focal_ce_loss.py tests/test_crop_resize.py tests/test_census_ops.py tests/test_ops_properties.py
