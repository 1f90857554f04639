"""``python -m lse_fast.report RUN_DIR_OR_JSON... --out DIR``: results in
the paper's layout.

Inputs: run directories of ``python -m lse_fast.adapt`` (or their
metrics.json; one row for the source-only model, one per round and one for
the oracle when the run trained it) and result JSONs of ``python -m
lse_fast.evaluate --json`` (one row each). Output, in DIR:

* ``report.md`` (and ``report.html`` with --html): one table with the
  per-class IoU of the 19 Cityscapes classes (a 16-class SYNTHIA result
  leaves terrain, truck and train empty), mIoU over 19, 16 and 13 classes,
  the change of the headline mIoU against the source-only row of the same
  run (or --source-only FILE for result JSONs) and, where the run trained
  the oracle, the paper's Table 3 performance gap (mIoU minus the oracle's).
* ``<run name>_examples.png`` per run directory: for a few target train
  images of the last round, image / ground truth (where the split has
  labels) / prediction of the final model / pseudo-label of that round
  (from the run's --export; the panel says so when it was not exported).

Nothing already in DIR is replaced without --overwrite.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from pathlib import Path

import numpy as np

from lse_fast.metrics import CITYSCAPES_CLASSES, SYNTHIA_13, SYNTHIA_16

PROG = "python -m lse_fast.report"
SHORT = ("road", "sidew.", "build.", "wall", "fence", "pole", "light", "sign", "veg.", "terr.", "sky", "person",
         "rider", "car", "truck", "bus", "train", "motor", "bike")  # the paper's column heads


class ReportError(ValueError):
    """A bad input or output path: exit status 2."""


def _f(v):
    return float("nan") if v is None else float(v)


def _mean(vals):
    kept = [v for v in vals if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def _row(name, per_class19, headline=None, kind="model", *, classes19=True):
    """A table row from IoUs by trainId (NaN: not evaluated / absent);
    `classes19` False for a 16-class (SYNTHIA) result, which has no mIoU19."""
    iou = [_f(v) for v in per_class19]
    row = {"name": name, "iou": iou, "kind": kind, "miou19": _mean(iou) if classes19 else float("nan"),
           "miou16": _mean([iou[c] for c in SYNTHIA_16]), "miou13": _mean([iou[c] for c in SYNTHIA_13])}
    row["headline"] = _f(headline) if headline is not None else (
        row["miou19"] if not math.isnan(row["miou19"]) else row["miou16"])
    return row


def _by_train_id(values, names):
    """IoUs listed in the order of `names` (19 Cityscapes or 16 SYNTHIA
    classes) -> 19 values by trainId, NaN for classes not evaluated."""
    out = [float("nan")] * 19
    for name, v in zip(names, values):
        if name not in CITYSCAPES_CLASSES:
            raise ReportError(f"{PROG}: class {name!r} is not a Cityscapes class; the paper's table has 19 columns")
        out[CITYSCAPES_CLASSES.index(name)] = _f(v)
    return out


def _run_rows(metrics: dict, prefix: str):
    names = metrics.get("class_names") or list(CITYSCAPES_CLASSES)
    rows = []
    entries = [("source-only", metrics.get("source_only"), "source")]
    entries += [(f"round {r['round']} (p={r['portion']:.2f})", r, "round") for r in metrics.get("rounds", [])]
    entries.append(("oracle", metrics.get("oracle"), "oracle"))
    for label, e, kind in entries:
        if not e:
            continue
        row = _row(prefix + label, _by_train_id(e["per_class_iou"], names), e.get("miou"), kind,
                   classes19=len(e["per_class_iou"]) == 19)
        row["protocol"] = e.get("protocol")
        rows.append(row)
    return rows


def _json_row(path: Path, data: dict, name: str):
    per = data.get("per_class_iou")
    if not isinstance(per, dict):
        raise ReportError(f"{PROG}: {str(path)!r} is neither a run's metrics.json nor a result of "
                          "python -m lse_fast.evaluate --json (no 'per_class_iou' table)")
    row = _row(name, _by_train_id(list(per.values()), list(per.keys())), data.get("miou"), "model",
               classes19=len(per) == 19)
    row["protocol"] = data.get("protocol")
    return row


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{PROG}: cannot read {str(path)!r}: {e}") from None


def collect(inputs, source_only=None):
    """(rows, runs): table rows with deltas and gaps filled in, and the run
    directories among `inputs` (for the picture grids)."""
    rows, runs = [], []
    baseline = None
    if source_only is not None:
        p = Path(source_only)
        baseline = _json_row(p, _read_json(p), f"source-only ({p.stem})")["headline"]
    several = len(inputs) > 1
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            mfile = p / "metrics.json"
            if not mfile.is_file():
                raise ReportError(f"{PROG}: {str(p)!r} has no metrics.json (not a run directory)")
        elif p.is_file():
            mfile = p
        else:
            raise ReportError(f"{PROG}: {str(p)!r} does not exist")
        data = _read_json(mfile)
        if isinstance(data, dict) and "rounds" in data and "source_only" in data:
            run_dir = mfile.parent
            run_rows = _run_rows(data, f"{run_dir.name}: " if several else "")
            base = next((r["headline"] for r in run_rows if r["kind"] == "source"), None)
            oracle = next((r["headline"] for r in run_rows if r["kind"] == "oracle"), None)
            for r in run_rows:
                r["delta"] = float("nan") if base is None or r["kind"] == "source" else r["headline"] - base
                r["gap"] = float("nan") if oracle is None or r["kind"] == "oracle" else r["headline"] - oracle
            rows.extend(run_rows)
            runs.append((run_dir, data))
        else:
            r = _json_row(mfile, data if isinstance(data, dict) else {}, mfile.stem)
            r["delta"] = float("nan") if baseline is None else r["headline"] - baseline
            r["gap"] = float("nan")
            rows.append(r)
    return rows, runs


def _pct(v, signed=False):
    if v is None or math.isnan(v):
        return "–"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


HEAD = ["model / round"] + list(SHORT) + ["mIoU19", "mIoU16", "mIoU13", "Δ source-only", "gap to oracle"]


def table_cells(rows):
    out = []
    for r in rows:
        out.append([r["name"]] + [_pct(v) for v in r["iou"]] + [_pct(r["miou19"]), _pct(r["miou16"]),
                                                              _pct(r["miou13"]), _pct(r["delta"], True),
                                                              _pct(r["gap"], True)])
    return out


def _protocols(rows):
    seen = []
    for r in rows:
        p = r.get("protocol")
        if p and p.get("upsampling") and p["upsampling"] not in seen:
            seen.append(p["upsampling"])
    return seen


def markdown(rows, grids) -> str:
    cells = table_cells(rows)
    lines = ["# Results", "",
             "IoU per class and mIoU in %, target val split. mIoU16 / mIoU13: the 16 / 13 classes of "
             "SYNTHIA -> Cityscapes (mIoU13 is the paper's mIoU*). Δ: headline mIoU minus the run's "
             "source-only model; gap: minus the oracle (target-supervised, paper Table 3). "
             "– : not evaluated (or absent from labels and predictions).", ""]
    protos = _protocols(rows)
    if protos:
        lines += ["Evaluation: labels at native resolution, logits upsampled " + "; ".join(protos) + ".", ""]
    lines.append("| " + " | ".join(HEAD) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(HEAD) - 1)) + "|")
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    for name, png in grids:
        lines += ["", f"## Examples: {name}", "", f"![{name}: image, ground truth, prediction, pseudo-label]({png})"]
    return "\n".join(lines) + "\n"


def html_page(rows, grids) -> str:
    cells = table_cells(rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEAD)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    imgs = "".join(f"<h2>Examples: {html.escape(n)}</h2><img src=\"{html.escape(p)}\" style=\"max-width:100%\">"
                   for n, p in grids)
    protos = _protocols(rows)
    note = ("<p>IoU and mIoU in %, target val split; – : not evaluated or absent."
            + (" Logits upsampled " + html.escape("; ".join(protos)) + "." if protos else "") + "</p>")
    return ("<!doctype html><meta charset=\"utf-8\"><title>lse_fast report</title>"
            "<style>td,th{padding:2px 6px;text-align:right;font-family:sans-serif;font-size:13px}"
            "td:first-child{text-align:left}</style><h1>Results</h1>"
            f"{note}<table><tr>{head}</tr>{body}</table>{imgs}\n")


# --------------------------------------------------------------------------- picture grid
def example_grid(run_dir: Path, metrics: dict, out_png: Path, num_images: int = 4) -> Path:
    """image / ground truth / prediction / pseudo-label of up to
    `num_images` target train images selected in the last round; None (and
    a line saying so) for a run without such a round."""
    import torch
    from PIL import Image

    from lse_fast.adapt.config import from_dict
    from lse_fast.adapt.context import View, build_model, load_datasets
    from lse_fast.adapt.plots import _plt, colorize
    from lse_fast.adapt.runs import Run
    from lse_fast.data._base import read_label
    from lse_fast.data.pil import loader as pil_loader
    from lse_fast.evaluate import predict_labels
    from lse_fast.evaluate.writer import match_predictions, read_prediction, to_train_ids

    rounds = metrics.get("rounds") or []
    if not rounds or not rounds[-1].get("selected_images"):
        print(f"{PROG}: no picture for {run_dir}: it has no finished round that selected images")
        return None
    last = rounds[-1]
    cfg = from_dict(Run.load_config(run_dir), "config.yaml")
    cfg.progress = False
    _, target, _ = load_datasets(cfg)
    chosen = list(last["selected_images"])[:num_images]
    ckpt = run_dir / "checkpoints" / f"round_{last['round']}.pt"
    if not ckpt.is_file():
        raise ReportError(f"{PROG}: the last round's checkpoint {str(ckpt)!r} is missing")
    model = build_model(cfg, metrics.get("input_normalization") if cfg.backbone else None)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    model.eval()
    pseudo_dir = run_dir / "export" / f"round_{last['round']}" / "pseudo_labels" / "trainIds"
    pseudo = None
    if pseudo_dir.is_dir():  # the whole exported tree is checked: a missing or extra file is named
        every = [target.image_path(i) for i in last["selected_images"]]
        pseudo = dict(zip(every, match_predictions(pseudo_dir, every)))
    h, w = cfg.image_size
    loader = pil_loader(View(target, chosen), batch_size=1, size=(h, w), num_threads=1,
                        normalization=getattr(model, "input_normalization", "imagenet"))
    plt = _plt()
    fig, axes = plt.subplots(len(chosen), 4, figsize=(4 * 3.2, len(chosen) * 3.2 * h / w + 0.6), squeeze=False)
    for (row, batch), i in zip(enumerate(loader), chosen):
        path = target.image_path(i)
        image = np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR))
        with torch.no_grad():
            pred = predict_labels(model, batch["image"], (h, w), amp=None, num_classes=cfg.num_classes,
                                  input_size=None, scales=(1.0,), flip=False,
                                  align_corners=cfg.eval_align_corners)
        panels = [("image", image), ("ground truth", None), ("prediction (final model)",
                                                               colorize(to_train_ids(pred[0], cfg.num_classes)))]
        if target.has_labels:
            gt = Image.fromarray(read_label(target, i)).resize((w, h), Image.NEAREST)
            panels[1] = ("ground truth", colorize(np.asarray(gt)))
        if pseudo is not None:
            panels.append((f"pseudo-label, round {last['round']}", colorize(read_prediction(pseudo[path], "trainIds"))))
        else:
            panels.append((f"pseudo-label, round {last['round']}", None))
        for col, (title, img) in enumerate(panels):
            ax = axes[row][col]
            ax.axis("off")
            if row == 0:
                ax.set_title(title, fontsize=10)
            if img is None:
                why = "no labels in this split" if col == 1 else "not exported\n(run with --export)"
                ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=9, transform=ax.transAxes)
            else:
                ax.imshow(img, interpolation="nearest")
        axes[row][0].text(0, -0.02, Path(path).name, fontsize=7, transform=axes[row][0].transAxes, va="top")
    fig.suptitle(f"{run_dir.name}: target train images selected in round {last['round']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png


# --------------------------------------------------------------------------- command line
def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("inputs", nargs="+", metavar="RUN_DIR_OR_JSON",
                   help="run directories (or their metrics.json) and python -m lse_fast.evaluate result JSONs")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.md, report.html and the pictures")
    p.add_argument("--html", action="store_true", help="also write report.html")
    p.add_argument("--images", type=int, default=4, help="images per picture grid (0: no pictures; default 4)")
    p.add_argument("--source-only", default=None, metavar="JSON",
                   help="a source-only result JSON: the Δ of result-JSON rows is taken against it")
    p.add_argument("--overwrite", action="store_true", help="replace files an earlier report left in --out")
    return p


def main(argv=None) -> dict:
    """Writes the report; returns {"rows": [...], "files": [...]}."""
    args = build_parser().parse_args(argv)
    if args.images < 0:
        raise ReportError(f"{PROG}: --images must be >= 0, got {args.images}")
    rows, runs = collect(args.inputs, args.source_only)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{PROG}: --out {str(out)!r} is not a directory")
    several = len(args.inputs) > 1
    names = [f"{d.name}_examples.png" if several else "examples.png" for d, _ in runs] if args.images else []
    planned = ["report.md"] + (["report.html"] if args.html else []) + names
    if not args.overwrite:
        for f in planned:
            if (out / f).exists():
                raise ReportError(f"{PROG}: {str(out / f)!r} exists; give another --out or --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    grids = []
    for (run_dir, metrics), name in zip(runs, names):
        if example_grid(run_dir, metrics, out / name, args.images) is not None:
            grids.append((run_dir.name, name))
        else:
            planned.remove(name)
    (out / "report.md").write_text(markdown(rows, grids))
    if args.html:
        (out / "report.html").write_text(html_page(rows, grids))
    files = [str(out / f) for f in planned]
    print(f"written {', '.join(files)}")
    return {"rows": rows, "files": files}


def cli(argv=None) -> int:
    try:
        main(argv)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
