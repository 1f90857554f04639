#!/usr/bin/env bash
# Runs NVIDIA compute-sanitizer (memcheck, racecheck, initcheck) over the
# CUDA tests (`pytest tests -k cuda`) and writes a summary to
# benchmarks/results/sanitize-<date>-<gpu>.txt (full logs in build/sanitize/).
#
# Usage: bash scripts/sanitize.sh [TOOL ...] [-- PYTEST_ARGS ...]
#   TOOL: memcheck, racecheck, initcheck (default: all three)
#   environment: COMPUTE_SANITIZER (path of the binary), PYTHON (default python3),
#                SANITIZE_OUT (summary file, default as above), SANITIZE_LOGS (log folder)
#
# Exit status: 0 every tool found no error and the tests passed; 1 a tool
# reported errors or a test failed (see the summary); 2 something needed is
# missing (compute-sanitizer, a CUDA GPU, an lse_fast build with CUDA kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ERROR_EXIT=86  # compute-sanitizer's exit status when it found errors (distinct from pytest's 0..5)

die() { echo "scripts/sanitize.sh: $*" >&2; exit 2; }

tools=()
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        memcheck|racecheck|initcheck) tools+=("$1") ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1': expected memcheck, racecheck, initcheck or -- PYTEST_ARGS" ;;
    esac
    shift
done
[ ${#tools[@]} -gt 0 ] || tools=(memcheck racecheck initcheck)

# --- what is needed ---------------------------------------------------------
san=${COMPUTE_SANITIZER:-}
if [ -z "$san" ]; then
    for c in "$(command -v compute-sanitizer || true)" "${CUDA_HOME:-/nonexistent}/bin/compute-sanitizer" \
             /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
        if [ -n "$c" ] && [ -x "$c" ]; then san=$c; break; fi
    done
fi
[ -n "$san" ] && [ -x "$san" ] || die "compute-sanitizer not found (looked at \$COMPUTE_SANITIZER, PATH, \
\$CUDA_HOME/bin, /usr/local/cuda/bin). It ships with the CUDA toolkit (package cuda-sanitizer-<version>); \
install it or set COMPUTE_SANITIZER=/path/to/compute-sanitizer"

gpu=$("$PY" - <<'EOF' 2>&1
import sys
try:
    import torch
except Exception as e:
    sys.exit(f"torch cannot be imported ({e})")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False; "
             f"torch built with CUDA {torch.version.cuda})")
try:
    import lse_fast
except Exception as e:
    sys.exit(f"lse_fast cannot be imported ({e}); build it with: bash scripts/setup.sh")
if not lse_fast.built_with_cuda():
    sys.exit("this lse_fast build has CPU kernels only; rebuild with FORCE_CUDA=1 bash scripts/setup.sh")
print(torch.cuda.get_device_name(0))
EOF
) || die "$gpu"

# --- runs -----------------------------------------------------------------------
date_utc=$(date -u +%Y-%m-%d)
slug=$(printf '%s' "$gpu" | tr -c 'A-Za-z0-9' '-' | tr -s '-' | sed 's/^-//; s/-$//')
summary=${SANITIZE_OUT:-benchmarks/results/sanitize-$date_utc-$slug.txt}
logdir=${SANITIZE_LOGS:-build/sanitize}
mkdir -p "$logdir" "$(dirname "$summary")"
san_version=$("$san" --version 2>&1 | tail -n 1)
{
    echo "# compute-sanitizer over the CUDA tests of lse_fast"
    echo "date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "gpu: $gpu"
    echo "compute-sanitizer: $san ($san_version)"
    echo "lse_fast revision: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "command: $san --tool TOOL --target-processes all --error-exitcode $ERROR_EXIT $PY -m pytest tests -k cuda -q ${pytest_args[*]:-}"
    echo "environment: PYTORCH_NO_CUDA_MEMORY_CACHING=1 (every tensor its own allocation, so an access past its end is caught)"
    echo
} >"$summary"

status=0
for tool in "${tools[@]}"; do
    log=$logdir/$tool.log
    out=$logdir/$tool.pytest.txt
    echo "[sanitize] $tool ..." >&2
    set +e
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$san" --tool "$tool" --target-processes all --error-exitcode "$ERROR_EXIT" \
        --print-limit 1000 --log-file "$log" \
        "$PY" -m pytest tests -k cuda -q -p no:cacheprovider -rs "${pytest_args[@]}" >"$out" 2>&1
    rc=$?
    # (still set +e: a grep that finds nothing is an answer here, not a failure)
    # "ERROR SUMMARY: N errors" (racecheck: "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)")
    errors=$(grep -Eo 'ERROR SUMMARY: [0-9]+ error' "$log" | grep -Eo '[0-9]+' | awk '{s += $1} END {print s + 0}')
    hazards=$(grep -Eo 'SUMMARY: [0-9]+ hazards? displayed \([0-9]+ errors?' "$log" | grep -Eo '\([0-9]+' | tr -d '(' \
              | awk '{s += $1} END {print s + 0}')
    ours=$(grep -Ec 'in .*lse::cuda' "$log" || true)
    passed=$(grep -Eo '[0-9]+ passed' "$out" | tail -n 1 | grep -Eo '[0-9]+')
    passed=${passed:-0}
    result=$(grep -E '(passed|failed|error)' "$out" | tail -n 1 || true)
    verdict=clean
    if [ "$rc" -eq "$ERROR_EXIT" ] || [ "$errors" -gt 0 ] || [ "$hazards" -gt 0 ]; then
        verdict="ERRORS FOUND"
    elif [ "$rc" -ne 0 ]; then
        verdict="TESTS FAILED (pytest status $rc)"
    elif [ "$passed" -eq 0 ]; then
        verdict="NOTHING RAN (no CUDA test passed)"
    fi
    [ "$verdict" = clean ] || status=1
    {
        echo "== $tool: $verdict"
        echo "   errors reported: $errors$([ "$tool" = racecheck ] && echo ", hazard errors: $hazards"), of which in lse::cuda kernels: $ours"
        echo "   pytest: ${result:-no summary line} (exit status $rc)"
        echo "   log: $log, test output: $out"
    } >>"$summary"
    set -e
done

cat "$summary"
exit $status
