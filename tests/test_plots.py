"""Run plots on metrics with absent classes and small counts: absent classes
are marked (never a 0 bar), counts get integer ticks, pseudo-label panels
carry a class legend. Asserts on the returned figures' axes, not on pixels."""

import math

import pytest
import torch

pytest.importorskip("matplotlib")

from lse_fast.adapt import plots  # noqa: E402
from lse_fast.data import CLASS_NAMES  # noqa: E402

ABSENT = (9, 14, 16)  # terrain, truck, train: NaN IoU (not in labels nor predictions)


def _metrics():
    def iou(shift):
        return [None if c in ABSENT else round(0.1 + 0.04 * c + shift, 3) for c in range(19)]

    before = iou(0.0)
    before[17] = None  # motorcycle: absent before, 0 after (predicted but not in the labels)
    after = iou(0.05)
    after[17] = 0.0
    rounds = []
    for r, p in ((1, 0.1), (2, 0.15)):
        rounds.append({
            "round": r, "portion": p, "miou": 0.3 + 0.01 * r, "per_class_iou": after,
            "selected_per_class": [(c + r) % 3 for c in range(19)],  # counts 0..2
            "thresholds": [None if c in ABSENT else 0.2 + 0.01 * c for c in range(19)],
        })
    return {"classes": list(range(19)), "class_names": list(CLASS_NAMES),
            "source_only": {"miou": 0.28, "per_class_iou": before}, "rounds": rounds}


def _texts(ax):
    return [(t.get_text(), t.get_position()) for t in ax.texts]


def test_per_class_iou_marks_absent_classes(tmp_path):
    fig = plots.per_class_iou(tmp_path / "iou.png", _metrics())
    assert (tmp_path / "iou.png").read_bytes()[:4] == b"\x89PNG"
    ax = fig.axes[0]
    marked = sorted(round(pos[0], 1) for text, pos in _texts(ax) if text == "absent")
    # once over every absent class, and over the before-bar of motorcycle
    assert marked == sorted([float(c) for c in ABSENT] + [16.8])
    grey = [t.get_text() for t in ax.get_xticklabels() if t.get_color() == plots.ABSENT_COLOR]
    assert grey == [CLASS_NAMES[c] for c in ABSENT]  # motorcycle has an IoU after: not greyed
    for bar in ax.patches:  # no bar is drawn for a NaN: absent is not 0
        x = bar.get_x() + bar.get_width() / 2
        c = round(x)
        if c in ABSENT:
            assert math.isnan(bar.get_height())


def test_selected_per_class_has_integer_ticks(tmp_path):
    fig = plots.selected_per_class(tmp_path / "sel.png", _metrics())
    ticks = fig.axes[0].get_yticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def test_thresholds_and_miou_plots_run(tmp_path):
    m = _metrics()
    fig = plots.thresholds_per_round(tmp_path / "th.png", m)
    ax = fig.axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert len(ax.get_lines()) == 19 - len(ABSENT)  # a class without any threshold gets no line
    fig = plots.miou_per_round(tmp_path / "miou.png", m)
    assert [round(y, 1) for y in fig.axes[0].get_lines()[0].get_ydata()] == [28.0, 31.0, 32.0]
    for r in m["rounds"]:
        r["thresholds"] = [None] * 19
    fig = plots.thresholds_per_round(tmp_path / "th_none.png", m)
    assert "no class has a threshold" in [t.get_text() for t in fig.axes[0].texts]


def test_pseudo_label_panels_have_a_class_legend(tmp_path):
    g = torch.Generator().manual_seed(0)
    lab = torch.full((16, 32), 255, dtype=torch.uint8)
    lab[:8] = 0  # road
    lab[8:, :10] = 13  # car
    lab[8:, 10:20] = 10  # sky
    examples = [(torch.randn(3, 16, 32, generator=g), lab), (torch.randn(3, 16, 32, generator=g), lab.flip(0))]
    fig = plots.pseudo_label_examples(tmp_path / "pl.png", examples, "imagenet", title="round 1")
    assert (tmp_path / "pl.png").is_file()
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["road", "sky", "car", "ignored"]
    names = [f"c{i}" for i in range(19)]
    fig = plots.pseudo_label_examples(tmp_path / "pl2.png", examples[:1], class_names=names)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["c0", "c10", "c13", "ignored"]
    assert plots.pseudo_label_examples(tmp_path / "none.png", []) is None


def test_all_plots_write_every_file(tmp_path):
    plots.all_plots(tmp_path, _metrics())
    for name in ("miou_per_round", "per_class_iou", "selected_per_class", "thresholds_per_round"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
