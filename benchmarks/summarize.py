"""Compact tables of the op benchmarks: per op, one row per shape, dtype and
variant with the median time of the fused op, of the baseline (the eager
reference; for crop_resize a Python `loop` of F.interpolate, for
crop_pseudo_labels the `reference` path), of torch.compile of the reference,
the fused op's speed-ups over both, its GB/s and that as a share of the
machine's copy bandwidth measured in the same run.

pytest prints these tables at the end of `pytest benchmarks/ --benchmark-only`
(benchmarks/conftest.py). For a saved run:
    python benchmarks/summarize.py                 the newest JSON under .benchmarks/ or benchmarks/results/
    python benchmarks/summarize.py FILE.json       a given one (pytest --benchmark-json / --benchmark-autosave)
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ("eager", "loop", "reference")  # the first one an op has is its baseline


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def _ratio(num, den):
    if num is None or den is None:
        return "-"
    return f"{num / den:.1f}x" if num >= den else f"{num / den:.2f}x"


def _markdown(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def format_tables(benchmarks):
    """Lines of one Markdown table per op and device. `benchmarks`: entries
    as in pytest-benchmark's JSON ({"name", "stats": {"median"},
    "extra_info"}); those without a `provider` in extra_info are left out."""
    groups = defaultdict(lambda: defaultdict(dict))  # (op, device) -> (shape, dtype, variant) -> provider -> info
    for b in benchmarks:
        info = b.get("extra_info", {})
        if "provider" not in info:
            continue
        op = b["name"].split("[")[0].removeprefix("test_")
        row = (info.get("shape", "?"), info.get("dtype", "?"), info.get("variant", ""))
        groups[(op, info.get("device", "?"))][row][info["provider"]] = dict(info, median=b["stats"]["median"])
    out = []
    for (op, device), rows in sorted(groups.items()):
        providers = {p for r in rows.values() for p in r}
        baseline = next((p for p in BASELINES if p in providers), None)
        others = sorted(providers - {"fused", "compile", baseline})
        with_variant = any(v for _, _, v in rows)
        header = ["shape", "dtype"] + (["variant"] if with_variant else []) + ["fused ms"]
        header += [f"{baseline} ms"] if baseline else []
        header += ["compile ms"] + [f"{p} ms" for p in others]
        header += [f"vs {baseline}"] if baseline else []
        header += ["vs compile", "fused GB/s", "of copy roof"]
        table = []
        for (shape, dtype, variant), by in sorted(rows.items()):
            med = {p: by[p]["median"] for p in by}
            fused = by.get("fused", {})
            share = fused.get("share_of_copy_roof", fused.get("share_of_copy_roof_rw"))
            cells = [shape, dtype] + ([variant or "-"] if with_variant else []) + [_ms(med.get("fused"))]
            cells += [_ms(med.get(baseline))] if baseline else []
            cells += [_ms(med.get("compile"))] + [_ms(med.get(p)) for p in others]
            cells += [_ratio(med.get(baseline), med.get("fused"))] if baseline else []
            cells += [_ratio(med.get("compile"), med.get("fused")), fused.get("GB/s", "-"),
                      "-" if share is None else f"{share:.0%}"]
            table.append(cells)
        out += ["", f"{op} ({device})", *_markdown(header, table)]
    return out


def latest_result(roots=(ROOT / ".benchmarks", ROOT / "benchmarks" / "results")):
    """The newest pytest-benchmark JSON file under `roots`, or None."""
    files = [p for r in roots if r.is_dir() for p in r.rglob("*.json")]
    return max(files, key=lambda p: p.stat().st_mtime, default=None)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = Path(argv[0]) if argv else latest_result()
    if path is None:
        print("summarize.py: no results yet: run `pytest benchmarks/ --benchmark-only --benchmark-autosave` "
              "(or give a JSON file)", file=sys.stderr)
        return 1
    try:
        data = json.loads(path.read_text())
        benchmarks = data["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"summarize.py: {path} is not a readable pytest-benchmark JSON file ({exc})", file=sys.stderr)
        return 1
    cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", "?")
    print(f"{path}\nmachine: {cpu}, date: {str(data.get('datetime', '?'))[:16]}")
    lines = format_tables(benchmarks)
    if not lines:
        print("(no op benchmarks with a `provider` in this file: end-to-end results only)")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. `| head`
        sys.stderr.close()
        sys.exit(0)
