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

"$PY" -m pytest tests "$@"
