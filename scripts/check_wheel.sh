#!/usr/bin/env bash
# CI check of the library install (docs/install.md): builds a wheel from this
# checkout against the installed torch, installs it into a fresh virtual
# environment that sees the installed packages (--system-site-packages; pip
# runs with --no-index --no-deps, so nothing is downloaded; the wheel's
# declared core dependencies are then checked against what is installed:
# the torch it pins, numpy), and runs all four ops from
# a directory outside the tree, checking that the wheel's lse_fast is the one
# imported (not this checkout, nor an editable install).
#   bash scripts/check_wheel.sh       (MAX_JOBS, PYTHON as for setup.sh)
# The build reuses the object files of earlier builds of this checkout (setup.py
# keeps them in a temp dir), so it recompiles only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lse_fast-wheel-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "[wheel-check] building a wheel (pip wheel --no-build-isolation)"
MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip wheel --quiet --no-build-isolation --no-deps -w "$WORK/dist" .
WHEEL=$(ls "$WORK"/dist/lse_fast-*.whl)
echo "[wheel-check] installing $(basename "$WHEEL") into a fresh venv"
"$PY" -m venv --system-site-packages "$WORK/venv"
VPY="$WORK/venv/bin/python"
# --no-deps: pip would otherwise also "upgrade" the venv's own old
# setuptools for torch's metadata; the core requirements are checked below.
env -u PYTHONPATH "$VPY" -m pip install --quiet --no-index --no-deps "$WHEEL"

mkdir "$WORK/outside"
cd "$WORK/outside"
env -u PYTHONPATH OMP_NUM_THREADS=1 "$VPY" -m lse_fast --version
env -u PYTHONPATH "$VPY" -m lse_fast.adapt --help >/dev/null  # the driver imports (its extra is installed here)
env -u PYTHONPATH OMP_NUM_THREADS=1 "$VPY" - "$WORK/venv" <<'PYEOF'
import os
import sys

import torch

import lse_fast
from lse_fast import reference

venv = os.path.realpath(sys.argv[1])
where = os.path.realpath(lse_fast.__file__)
assert where.startswith(venv + os.sep), f"imported lse_fast from {where}, not from the wheel in {venv}"

# The wheel's core requirements (no extra) are met by the installed packages.
from importlib import metadata
from pip._vendor.packaging.requirements import Requirement

core = [Requirement(r) for r in metadata.requires("lse_fast") if "extra ==" not in r]
assert {r.name for r in core} == {"torch", "numpy"}, core
for req in core:
    have = metadata.version(req.name)
    assert req.specifier.contains(have, prereleases=True), f"the wheel requires {req}, installed: {have}"

torch.manual_seed(0)
logits = torch.randn(2, 5, 16, 24)
got, want = lse_fast.score(logits), reference.score(logits)
for name in got._fields:
    torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-4, atol=1e-5, msg=name)

target = torch.randint(0, 5, (2, 16, 24))
target[:, :2] = 255
x = logits.clone().requires_grad_()
loss = lse_fast.focal_ce_loss(x, target)
loss.backward()
torch.testing.assert_close(loss, reference.focal_ce_loss(logits, target), rtol=1e-5, atol=1e-6)
assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

boxes = torch.tensor([[0, 2.0, 1.0, 14.0, 9.0], [1, 0.5, 0.0, 24.0, 16.0]])
torch.testing.assert_close(lse_fast.crop_resize(logits, boxes, (8, 8)), reference.crop_resize(logits, boxes, (8, 8)),
                           rtol=1e-5, atol=1e-5)

probs = logits.softmax(1)
thresholds = torch.full((5,), 0.9)
labels = lse_fast.crop_pseudo_labels(probs, boxes, (8, 8), thresholds)
assert labels.dtype == torch.uint8 and labels.shape == (2, 8, 8)
assert torch.equal(labels, reference.crop_pseudo_labels(probs, boxes, (8, 8), thresholds))
print(f"[wheel-check] ok: score, focal_ce_loss, crop_resize, crop_pseudo_labels from {where}")
PYEOF
