#!/usr/bin/env bash
# Installs what lse_fast needs and builds its extension in place.
#   bash scripts/setup.sh          runtime dependencies
#   bash scripts/setup.sh --dev    plus the test and benchmark tools
# An already installed torch (e.g. a CUDA build) is kept; otherwise the CPU
# build torch==2.13.0 is installed (an unpinned torch pulls GBs of CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install --quiet torch==2.13.0
fi
"$PY" -m pip install --quiet -r requirements.txt
if [[ "${1:-}" == "--dev" ]]; then
  "$PY" -m pip install --quiet -r requirements-dev.txt
fi
# --no-build-isolation: build against the torch installed above.
MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip install --quiet --no-build-isolation -e .
"$PY" -c "import lse_fast; print('lse_fast', lse_fast.__version__, 'built; CUDA kernels:', lse_fast.built_with_cuda())"
