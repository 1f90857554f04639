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
# Error-path smoke check: a broken extension toolchain can build a _C.so
# that crashes on every C++ error (seen with an image's default g++, see
# README "Build options"). Call the ops with bad arguments straight through
# torch.ops (the C++ checks, integers in the message) and expect a clean
# RuntimeError naming the argument.
if ! "$PY" - <<'PYEOF'
import torch
import lse_fast  # noqa: F401  (registers torch.ops.lse_fast)

cases = [
    ("logits", lambda: torch.ops.lse_fast.score.default(torch.zeros(2, 3))),
    ("target", lambda: torch.ops.lse_fast.focal_ce_loss.default(
        torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 7), 3.0, 0.1, 255, 1, False)),
]
for name, call in cases:
    try:
        call()
    except RuntimeError as exc:
        if f"`{name}`" not in str(exc):
            raise SystemExit(f"unexpected error text: {exc}")
    else:
        raise SystemExit(f"a bad `{name}` raised no error")
print("lse_fast error-path smoke check: ok")
PYEOF
then
  cat >&2 <<'MSG'
lse_fast setup: the built extension does not raise clean errors (it crashed
or gave the wrong error on a bad argument). The C++ compiler picked up for
extensions is likely incompatible with torch's libstdc++. Rebuild with the
system compiler, e.g.
    CXX=/usr/bin/g++ CC=/usr/bin/gcc bash scripts/setup.sh
or  CXX=/usr/bin/g++ CC=/usr/bin/gcc python3 setup.py build_ext --inplace
(README.md, "Build options").
MSG
  exit 1
fi
