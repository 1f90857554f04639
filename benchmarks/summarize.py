"""Prints a Markdown table from a pytest-benchmark JSON file:
    python benchmarks/summarize.py benchmarks/results/<file>.json
Speed-ups are against the baseline provider (`eager`, or for the crop ops
the `loop` of F.interpolate / the `reference` path) and the `compile`
provider of the same op, shape, dtype and device."""

import json
import sys
from collections import defaultdict


def main(path):
    data = json.load(open(path))
    rows = defaultdict(dict)
    for b in data["benchmarks"]:
        info = b["extra_info"]
        key = (b["name"].split("[")[0], info["device"], info["shape"], info["dtype"])
        peak = info.get("peak_MiB", info.get("peak_extra_MiB"))
        rows[key][info["provider"]] = (b["stats"]["median"], info.get("GB/s"), peak)
    print(f"machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, "
          f"date: {data['datetime'][:10]}")
    print("| op | device | shape | dtype | provider | median ms | GB/s | peak MiB | vs baseline | vs compile |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (op, device, shape, dtype), providers in sorted(rows.items()):
        base = next((providers[p][0] for p in ("eager", "loop", "reference") if p in providers), None)
        comp = providers.get("compile", (None,))[0]
        for name, (median, gbs, peak) in sorted(providers.items()):
            vs_b = f"{base / median:.1f}x" if base else "-"
            vs_c = f"{comp / median:.1f}x" if comp else "-"
            peak = "-" if peak is None else peak
            print(f"| {op} | {device} | {shape} | {dtype} | {name} | {median * 1e3:.2f} | {gbs} | {peak} | {vs_b} | {vs_c} |")


if __name__ == "__main__":
    main(sys.argv[1])
