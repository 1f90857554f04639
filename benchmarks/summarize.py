"""Prints a Markdown table from a pytest-benchmark JSON file:
    python benchmarks/summarize.py benchmarks/results/<file>.json
Speed-ups are against the `eager` and `compile` providers of the same op,
shape, dtype and device."""

import json
import sys
from collections import defaultdict


def main(path):
    data = json.load(open(path))
    rows = defaultdict(dict)
    for b in data["benchmarks"]:
        info = b["extra_info"]
        key = (b["name"].split("[")[0], info["device"], info["shape"], info["dtype"])
        rows[key][info["provider"]] = (b["stats"]["median"], info.get("GB/s"), info.get("peak_MiB"))
    print(f"machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, "
          f"date: {data['datetime'][:10]}")
    print("| op | device | shape | dtype | provider | median ms | GB/s | vs eager | vs compile |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (op, device, shape, dtype), providers in sorted(rows.items()):
        eager = providers.get("eager", (None,))[0]
        comp = providers.get("compile", (None,))[0]
        for name, (median, gbs, _peak) in sorted(providers.items()):
            vs_e = f"{eager / median:.1f}x" if eager else "-"
            vs_c = f"{comp / median:.1f}x" if comp else "-"
            print(f"| {op} | {device} | {shape} | {dtype} | {name} | {median * 1e3:.2f} | {gbs} | {vs_e} | {vs_c} |")


if __name__ == "__main__":
    main(sys.argv[1])
