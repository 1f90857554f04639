#!/usr/bin/env bash
# Installs what lse_fast needs and builds its extension in place.
#   bash scripts/setup.sh            runtime dependencies
#   bash scripts/setup.sh --dev      plus the test and benchmark tools
#   bash scripts/setup.sh --dry-run  only print what would be installed or built, and why
# An already installed torch (e.g. a CUDA build) is kept; otherwise the CPU
# build torch==2.13.0 is installed (an unpinned torch pulls GBs of CUDA).
# Steps with nothing to do are skipped: pip runs only when a requirement is
# not satisfied, and the build only when the extension is missing, older
# than a file under csrc/ or setup.py, or lse_fast does not import from this
# checkout (e.g. built against another torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

DEV=0
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --dry-run) DRY=1 ;;
    *) echo "setup.sh: unknown option '$arg' (expected --dev and/or --dry-run)" >&2; exit 2 ;;
  esac
done

step() {  # step "why" command...: runs the command, or prints it under --dry-run
  local why=$1
  shift
  if [[ $DRY == 1 ]]; then
    echo "[setup] would run: $* ($why)"
  else
    echo "[setup] $why: $*"
    "$@"
  fi
}

# Requirement lines of the given files that the current environment does not
# satisfy (one per line; nothing if all are met). Falls back to "unknown"
# (so pip runs) if the check itself cannot run.
unmet_requirements() {
  "$PY" - "$@" <<'EOF' 2>/dev/null || echo "(could not check the installed packages)"
import sys
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

for path in sys.argv[1:]:
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):  # pip options (-r, -e, --index-url): leave them to pip
            print(line)
            continue
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            print(f"{req} (not installed)")
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            print(f"{req} (installed {version})")
EOF
}

# Why the extension must be (re)built; nothing if it is built and current.
build_reason() {
  local so newer here
  so=$(ls lse_fast/_C*.so lse_fast/_C*.pyd 2>/dev/null | head -n 1 || true)
  if [[ -z "$so" ]]; then
    echo "no built extension lse_fast/_C*.so"
    return
  fi
  newer=$(find csrc setup.py -type f -newer "$so" -print 2>/dev/null | head -n 1 || true)
  if [[ -n "$newer" ]]; then
    echo "$newer is newer than $so"
    return
  fi
  here=$(cd / && "$PY" -c "import os, lse_fast; print(os.path.realpath(os.path.dirname(lse_fast.__file__)))" 2>/dev/null || true)
  if [[ "$here" != "$(pwd -P)/lse_fast" ]]; then
    echo "lse_fast does not import from this checkout (import gives: ${here:-an error})"
  fi
}

if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)" 2>/dev/null; then
  step "torch is not installed" "$PY" -m pip install --quiet torch==2.13.0
fi
REQS=(requirements.txt)
if [[ $DEV == 1 ]]; then
  REQS+=(requirements-dev.txt)
fi
PIP_ARGS=()
for r in "${REQS[@]}"; do
  PIP_ARGS+=(-r "$r")
done
UNMET=$(unmet_requirements "${REQS[@]}")
if [[ -n "$UNMET" ]]; then
  step "unmet: $(echo "$UNMET" | paste -sd ';' -)" "$PY" -m pip install --quiet "${PIP_ARGS[@]}"
else
  echo "[setup] skip pip: every requirement of ${REQS[*]} is satisfied"
fi
REASON=$(build_reason)
if [[ -n "$REASON" ]]; then
  # --no-build-isolation: build against the torch installed above.
  step "$REASON" env MAX_JOBS="${MAX_JOBS:-2}" "$PY" -m pip install --quiet --no-build-isolation -e .
  # The build is now current with every source, also those it did not need
  # to recompile (e.g. .cu files in a CPU-only build, which leave _C alone).
  [[ $DRY == 1 ]] || touch lse_fast/_C*.so
else
  echo "[setup] skip build: lse_fast/_C is newer than csrc/ and setup.py and imports from this checkout"
fi
if [[ $DRY == 1 ]]; then
  exit 0
fi
"$PY" -c "import lse_fast; print('lse_fast', lse_fast.__version__, 'built; CUDA kernels:', lse_fast.built_with_cuda())"
# Error-path smoke check: a broken extension toolchain can build a _C.so
# that crashes on every C++ error (seen with an image's default g++, see
# docs/build.md). Call the ops with bad arguments straight through
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
(docs/build.md).
MSG
  exit 1
fi
