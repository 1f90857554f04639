"""The benchmark summary table (benchmarks/summarize.py, printed by the hook
in benchmarks/conftest.py) and summarize.py without arguments."""

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import summarize

ROOT = Path(__file__).resolve().parents[1]


def entry(op, provider, median, shape="2x19x512x1024", dtype="float32", variant="", **info):
    return {"name": f"test_{op}[cpu-{provider}]", "stats": {"median": median},
            "extra_info": dict(device="cpu x2", shape=shape, dtype=dtype, provider=provider, variant=variant, **info)}


def test_one_row_per_shape_with_speedups_and_roof_share():
    lines = summarize.format_tables([
        entry("score", "fused", 0.010, **{"GB/s": 8.0, "share_of_copy_roof_rw": 0.4}),
        entry("score", "eager", 0.250),
        entry("score", "compile", 0.050),
        entry("score", "fused", 0.001, shape="1x19x64x128"),  # no baseline measured: dashes, not errors
        {"name": "test_adapt_round[fused]", "stats": {"median": 9.0}, "extra_info": {}},  # end-to-end: left out
    ])
    assert lines[1] == "score (cpu x2)"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["shape", "dtype", "fused ms", "eager ms", "compile ms", "vs eager", "vs compile",
                      "fused GB/s", "of copy roof"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[4:]]
    assert rows == [["1x19x64x128", "float32", "1.00", "-", "-", "-", "-", "-", "-"],
                    ["2x19x512x1024", "float32", "10.00", "250.00", "50.00", "25.0x", "5.0x", "8.0", "40%"]]


def test_baseline_variants_and_other_providers_get_columns():
    lines = summarize.format_tables([
        entry("crop_resize", "fused", 0.002, variant="align_corners=True", share_of_copy_roof=0.25),
        entry("crop_resize", "loop", 0.008, variant="align_corners=True"),
        entry("crop_resize", "fused", 0.001, variant="align_corners=False"),
        entry("crop_resize", "interpolate+fused", 0.004, variant="align_corners=False"),
        entry("crop_resize", "compile", 0.0005, variant="align_corners=False"),
    ])
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header[:7] == ["shape", "dtype", "variant", "fused ms", "loop ms", "compile ms", "interpolate+fused ms"]
    rows = {r[2]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in lines[4:])}
    assert rows["align_corners=True"][7] == "4.0x" and rows["align_corners=True"][-1] == "25%"
    assert rows["align_corners=False"][8] == "0.50x"  # slower than compile shows as < 1


def test_summarize_without_arguments_reads_the_newest_file(tmp_path):
    old, new = tmp_path / "a" / "old.json", tmp_path / "b" / "new.json"
    for path, median in ((old, 1.0), (new, 0.5)):
        path.parent.mkdir()
        path.write_text(json.dumps({"datetime": "2026-12-01T10:00:00", "machine_info": {"cpu": {"brand_raw": "X"}},
                                    "benchmarks": [entry("score", "fused", median)]}))
    os.utime(old, (1_000_000, 1_000_000))
    assert summarize.latest_result((tmp_path / "a", tmp_path / "b", tmp_path / "missing")) == new
    assert summarize.latest_result((tmp_path / "missing",)) is None


def test_summarize_script_runs_on_the_committed_results():
    proc = subprocess.run([sys.executable, "benchmarks/summarize.py", "benchmarks/results/cpu-2026-11-23.json"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "\nscore (" in proc.stdout and "| vs eager |" in proc.stdout
    proc = subprocess.run([sys.executable, "benchmarks/summarize.py"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr  # the newest results file, no IndexError
    bad = subprocess.run([sys.executable, "benchmarks/summarize.py", "README.md"], capture_output=True, text=True,
                         cwd=ROOT)
    assert bad.returncode == 1 and "README.md is not a readable pytest-benchmark JSON file" in bad.stderr
