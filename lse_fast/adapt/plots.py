"""PNG plots of a run (matplotlib, Agg backend): mIoU per round, per-class
IoU before/after, images selected per class per round (the paper's Fig. 5),
thresholds per class per round, pseudo-label examples over their patches.

A class whose IoU is NaN (absent from both the labels and the predictions)
is marked "absent" and its name greyed, never drawn as a 0 bar; counts get
integer ticks; the pseudo-label panels carry a legend of the classes shown.
Every plot function saves its PNG and returns the (closed) Figure, whose
axes can still be inspected."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# Cityscapes colours by trainId; 255 (ignored) is drawn black.
PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
        (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


ABSENT_COLOR = "0.6"


def _write_png(fig, path):
    """savefig through an atomic write: a stopped run never leaves half a PNG."""
    import io

    from lse_fast.adapt.runs import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format=Path(path).suffix.lstrip(".") or "png")
    atomic_write(path, buf.getvalue(), durable=False)


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    _write_png(fig, path)
    plt.close(fig)
    return fig


def _save_laid_out(fig, path):
    """_save for a figure whose layout is already set (keeps room for a figure legend)."""
    import matplotlib.pyplot as plt

    _write_png(fig, path)
    plt.close(fig)
    return fig


def _integer_ticks(axis):
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _mark_absent(ax, x, offsets, series):
    """NaN IoU = the class is in neither the labels nor the predictions: one
    "absent" over a class absent from every series (its name greyed), or
    over the one bar that has no value; never an empty slot that reads as 0.
    Call after the tick labels are set."""
    labels = ax.get_xticklabels()
    for i, xi in enumerate(x):
        nan = [math.isnan(s[i]) for s in series]
        spots = [xi] if all(nan) else [xi + off for off, n in zip(offsets, nan) if n]
        for pos in spots:
            ax.text(pos, 1.0, "absent", rotation=90, ha="center", va="bottom", fontsize=7, color=ABSENT_COLOR)
        if all(nan):
            labels[i].set_color(ABSENT_COLOR)


def _per_class_axes(ax, x, names, ylabel, title, legend_fontsize=None):
    """Class names under grouped bars, the labels and the legend."""
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=60, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_fontsize)


def colorize(label):
    """uint8/int [H, W] trainIds -> uint8 [H, W, 3] (255 black, other ids grey)."""
    lab = np.asarray(label).astype(np.int64)
    out = np.zeros(lab.shape + (3,), dtype=np.uint8)
    known = (lab >= 0) & (lab < len(PALETTE))
    out[known] = PALETTE[lab[known]]
    other = ~known & (lab != 255)
    out[other] = 128
    return out


def _nan(v):
    return float("nan") if v is None else float(v)


def _names(metrics, classes):
    names = metrics.get("class_names") or []
    return [names[c] if c < len(names) else str(c) for c in classes]


def miou_per_round(path, metrics):
    plt = _plt()
    so = metrics.get("source_only") or {}
    xs = [0] + [r["round"] for r in metrics["rounds"]]
    ys = [100 * _nan(so.get("miou"))] + [100 * _nan(r["miou"]) for r in metrics["rounds"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, ys, marker="o")
    ax.set_xticks(xs)
    ax.set_xticklabels(["source\nonly"] + [f"{r['round']}\np={r['portion']:.2f}" for r in metrics["rounds"]])
    ax.set_ylabel("target val mIoU (%)")
    ax.set_title("mIoU per round")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def per_class_iou(path, metrics):
    """Per-class IoU of the source-only model and of the last round; classes
    with no IoU in either (absent from the data) are marked absent."""
    plt = _plt()
    classes = metrics.get("classes") or list(range(len(metrics["source_only"]["per_class_iou"])))
    names = _names(metrics, classes)
    before = [100 * _nan(metrics["source_only"]["per_class_iou"][c]) for c in classes]
    last = metrics["rounds"][-1]
    after = [100 * _nan(last["per_class_iou"][c]) for c in classes]
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(classes)), 4))
    ax.bar(x - 0.2, before, 0.4, label="source only")
    ax.bar(x + 0.2, after, 0.4, label=f"after round {last['round']}")
    _per_class_axes(ax, x, names, "IoU (%)", "per-class IoU before / after self-training")
    ax.set_ylim(0, max([v for v in before + after if not math.isnan(v)] + [1.0]) * 1.15 + 5)
    _mark_absent(ax, x, (-0.2, 0.2), (before, after))
    return _save(fig, path)


def selected_per_class(path, metrics):
    """Images selected per class in every round (the paper's Fig. 5)."""
    plt = _plt()
    classes = metrics.get("classes") or list(range(len(metrics["rounds"][0]["selected_per_class"])))
    names = _names(metrics, classes)
    rounds = metrics["rounds"]
    x = np.arange(len(classes))
    width = 0.8 / len(rounds)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(classes)), 4))
    for j, r in enumerate(rounds):
        ax.bar(x - 0.4 + (j + 0.5) * width, [r["selected_per_class"][c] for c in classes], width,
               label=f"round {r['round']} (p={r['portion']:.2f})")
    _per_class_axes(ax, x, names, "images selected", "images selected per class per round", legend_fontsize=7)
    _integer_ticks(ax.yaxis)
    return _save(fig, path)


def thresholds_per_round(path, metrics):
    plt = _plt()
    classes = metrics.get("classes") or list(range(len(metrics["rounds"][0]["thresholds"])))
    names = _names(metrics, classes)
    rounds = metrics["rounds"]
    xs = [r["round"] for r in rounds]
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("tab20")
    for j, c in enumerate(classes):
        ys = [_nan(r["thresholds"][c]) for r in rounds]
        if all(math.isnan(y) for y in ys):
            continue
        color = PALETTE[c] / 255.0 if c < len(PALETTE) else cmap(j % 20)
        ax.plot(xs, ys, marker="o", label=names[j], color=color)
    ax.set_xticks(xs)
    ax.set_xlabel("round")
    ax.set_ylabel("threshold h_c (normalised entropy)")
    ax.set_title("dynamic thresholds per class")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, ncol=2)
    else:
        ax.text(0.5, 0.5, "no class has a threshold", transform=ax.transAxes, ha="center", color=ABSENT_COLOR)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def pseudo_label_examples(path, examples, normalization="imagenet", title="", class_names=None):
    """A few (patch image [3, H, W] normalised, pseudo-label uint8 [H, W])
    pairs: the patch, its pseudo-label and the label over the patch, with a
    legend of the classes that occur in the pseudo-labels (and "ignored").
    `class_names` by trainId (default: the 19 Cityscapes classes)."""
    if not examples:
        return None
    from matplotlib.patches import Patch

    from lse_fast.data import CLASS_NAMES, denormalize

    names = list(CLASS_NAMES if class_names is None else class_names)
    plt = _plt()
    n = len(examples)
    present = sorted({int(v) for _, lab in examples for v in np.unique(lab.numpy())})
    fig, axes = plt.subplots(n, 3, figsize=(9, 1.7 * n * 1.0 + 0.6), squeeze=False)
    for i, (img, lab) in enumerate(examples):
        rgb = denormalize(img.unsqueeze(0).float(), normalization)[0].numpy()
        col = colorize(lab.numpy())
        ignored = lab.numpy() == 255
        over = (0.5 * rgb + 0.5 * col).astype(np.uint8)
        over[ignored] = rgb[ignored]
        for ax, im, t in zip(axes[i], (rgb, col, over), ("patch", "pseudo-label (black: ignored)", "overlay")):
            ax.imshow(im)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(t, fontsize=8)
    handles = []
    for c in present:
        if c == 255:
            handles.append(Patch(facecolor="black", edgecolor="0.5", label="ignored"))
        else:
            color = PALETTE[c] / 255.0 if 0 <= c < len(PALETTE) else (0.5, 0.5, 0.5)
            handles.append(Patch(facecolor=color, edgecolor="0.5", label=names[c] if 0 <= c < len(names) else str(c)))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.06 + 0.02 * ((len(handles) - 1) // 6), 1, 0.95 if title else 1))
    if title:
        fig.suptitle(title, fontsize=9)
    return _save_laid_out(fig, path)


def all_plots(directory, metrics):
    """Writes the per-run plots (those that have data) into `directory`."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if metrics.get("source_only") is None:
        return
    miou_per_round(d / "miou_per_round.png", metrics)
    if metrics["rounds"]:
        per_class_iou(d / "per_class_iou.png", metrics)
        selected_per_class(d / "selected_per_class.png", metrics)
        thresholds_per_round(d / "thresholds_per_round.png", metrics)
