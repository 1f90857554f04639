"""Step 2 of a round (paper Sections 3.3-3.4): class-based sorting and the
dynamic per-class thresholds, from the per-image sums of the scoring step
(:func:`lse_fast.selection.select`)."""

from __future__ import annotations

from lse_fast import selection as sel
from lse_fast.adapt.context import Context
from lse_fast.adapt.runs import kill_point
from lse_fast.adapt.scoring import ScoreResult


def select_images(ctx: Context, scores: ScoreResult, portion: float) -> sel.Selection:
    """The images of this round and the thresholds h_c."""
    cfg = ctx.cfg
    kill_point("select")
    return sel.select(
        scores.class_pixels, scores.class_confidence, scores.class_entropy, portion,
        classes=ctx.classes, threshold_image=cfg.threshold_image, rounding=cfg.share_rounding,
    )
