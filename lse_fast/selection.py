"""Class-based sorting and dynamic thresholds of LSE (paper, Sections 3.3-3.4,
Algorithm 1), computed from per-image per-class statistics only.

The statistics are the per-class sums that :func:`lse_fast.ops.score` returns
for every image of the target set: ``class_pixels`` (int64 ``[N, C]``, pixels
predicted c), ``class_confidence`` (sum of the max-probability over those
pixels) and ``class_entropy`` (sum of their normalised entropy). Nothing here
looks at a pixel again: U_c(t) = class_confidence / class_pixels is the mean
confidence of class c in image t, and h_c is the mean normalised entropy of
class c in one image, which the same sums give without a second forward pass.

Rules (the paper's, with the decisions it leaves open made explicit):

* Only the classes in ``classes`` take part (default: all ``C`` columns).
  A dataset that lacks classes (SYNTHIA has 16 of the 19 Cityscapes train
  classes) passes the ones it has; the others are skipped: no image is
  selected for them and their threshold is NaN.
* For class c, the candidates are the images that predict c (at least one
  pixel). They are sorted by U_c, descending; equal U_c keep the lower image
  index first, so the order is deterministic.
* Per-class share: ``k_c = ceil(n_c * p / C)`` images, where ``n_c`` is the
  number of images predicting c and ``C = len(classes)`` (16 for SYNTHIA, not
  the 19 the authors' code divides by). Rounding up keeps at least one image
  of every predicted class, which is the point of sorting per class, and
  makes small target sets work (``rounding="floor"`` truncates instead, which
  can select nothing for a class). The product is rounded to 9 decimals
  before ``ceil``/``floor`` so that e.g. ``190 * 0.1 / 19`` counts as 1.
* A class predicted by no image is skipped (never a crash).
* The selected set is the union over classes, without duplicates, as sorted
  image indices.
* Threshold h_c: the mean normalised entropy of class c in the last selected
  image of class c (paper, Algorithm 1 line 17). ``threshold_image=
  "first_unselected"`` takes the first image after the selected ones instead
  (the authors' public code); when every candidate is selected it falls back
  to the last selected one.
* A class whose share rounds to 0 images (only under ``rounding="floor"``)
  selects no image. With ``zero_share="skip"`` (default) it gets no threshold
  (NaN, so :meth:`Selection.filter_thresholds` ignores all its pixels); with
  ``zero_share="top_image"`` it still takes h_c from its top-ranked image (the
  authors' code: their threshold image is the first unselected one, which is
  the top image when none is selected).

The authors' variants of the entropy map (min-max normalisation per image and
predicted class) and of the filter map (bilinear resize of the keep-mask) are
here too: :func:`minmax_class_entropy`, :func:`minmax_class_entropy_sums`,
:func:`filter_map` and :func:`pseudo_labels`, so another training loop can run
the driver's selection step by step (docs/selection.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

THRESHOLD_IMAGES = ("last_selected", "first_unselected")
ROUNDINGS = ("ceil", "floor")
ZERO_SHARES = ("skip", "top_image")
ENTROPY_NORMS = ("log_c", "minmax")
FILTER_INTERPS = ("nearest", "bilinear")


@dataclass
class Selection:
    """Result of :func:`select`.

    Attributes:
        indices: int64 ``[S]`` the selected images (sorted, unique).
        per_class: for every class column c, int64 tensor of the images
            selected for c in rank order (empty for skipped classes).
        candidates: ``[C]`` number of images predicting c (0 for classes not
            in ``classes``).
        thresholds: float32 ``[C]`` h_c, NaN where class c has no threshold
            (skipped, never predicted, or a share of 0 images under
            ``zero_share="skip"``).
        threshold_images: ``[C]`` index of the image h_c was taken from, or None.
    """

    indices: torch.Tensor
    per_class: list
    candidates: list
    thresholds: torch.Tensor
    threshold_images: list

    @property
    def counts(self) -> list:
        """Images selected per class column."""
        return [int(t.numel()) for t in self.per_class]

    def filter_thresholds(self) -> torch.Tensor:
        """Thresholds ready for the filter map: NaN replaced by -1, so that no
        pixel predicted as a class without a threshold is kept (normalised
        entropy is >= 0)."""
        return torch.nan_to_num(self.thresholds, nan=-1.0)


def share(num_predicting: int, portion: float, num_classes: int, rounding: str = "ceil") -> int:
    """Images kept for a class predicted by ``num_predicting`` images:
    ``ceil(num_predicting * portion / num_classes)`` (or ``floor``), at most
    ``num_predicting``."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"lse_fast.selection: `rounding` must be one of {ROUNDINGS}, got {rounding!r}")
    if num_classes <= 0:
        raise ValueError(f"lse_fast.selection: `num_classes` must be positive, got {num_classes}")
    x = round(num_predicting * portion / num_classes, 9)
    k = math.ceil(x) if rounding == "ceil" else math.floor(x)
    return max(0, min(int(num_predicting), int(k)))


def class_means(class_sum: torch.Tensor, class_pixels: torch.Tensor) -> torch.Tensor:
    """Per-image per-class mean (float64 ``[N, C]``), NaN where the class has
    no pixel in the image."""
    pixels = class_pixels.to(torch.float64)
    mean = class_sum.to(torch.float64) / pixels.clamp(min=1)
    return torch.where(class_pixels > 0, mean, torch.full_like(mean, float("nan")))


def _check_stats(class_pixels, *others):
    if class_pixels.dim() != 2:
        raise ValueError(f"lse_fast.selection: `class_pixels` must be [N, C], got shape {tuple(class_pixels.shape)}")
    for name, t in others:
        if t.shape != class_pixels.shape:
            raise ValueError(
                f"lse_fast.selection: `{name}` must have the shape of `class_pixels` "
                f"{tuple(class_pixels.shape)}, got {tuple(t.shape)}"
            )


def _classes(classes, num_columns):
    if classes is None:
        return list(range(num_columns))
    out = sorted({int(c) for c in classes})
    if out and (out[0] < 0 or out[-1] >= num_columns):
        raise ValueError(f"lse_fast.selection: `classes` must lie in [0, {num_columns}), got {out}")
    return out


def ranking(class_pixels: torch.Tensor, class_confidence: torch.Tensor, c: int) -> torch.Tensor:
    """Images predicting class ``c`` sorted by U_c descending (ties: lower
    index first), as int64 indices."""
    pixels = class_pixels[:, c]
    images = torch.nonzero(pixels > 0).flatten().cpu()
    if images.numel() == 0:
        return images
    u = class_confidence[:, c].cpu().to(torch.float64)[images] / pixels.cpu()[images].to(torch.float64)
    order = torch.sort(-u, stable=True).indices
    return images[order]


def select(
    class_pixels: torch.Tensor,
    class_confidence: torch.Tensor,
    class_entropy: torch.Tensor,
    portion: float,
    *,
    classes=None,
    threshold_image: str = "last_selected",
    rounding: str = "ceil",
    zero_share: str = "skip",
) -> Selection:
    """Class-based sorting and dynamic thresholds for one round.

    Args:
        class_pixels: int ``[N, C]`` pixels predicted as each class per image.
        class_confidence: float ``[N, C]`` sum of max-probability over them.
        class_entropy: float ``[N, C]`` sum of normalised entropy over them.
        portion: p in (0, 1].
        classes: class columns taking part (default all); C = len(classes).
        threshold_image: "last_selected" (paper) or "first_unselected" (authors' code).
        rounding: "ceil" (default) or "floor" for the per-class share.
        zero_share: what a class whose share is 0 images gets: "skip" (no
            threshold: NaN) or "top_image" (h_c from its top-ranked image,
            the authors' code). Only "floor" rounding can give a share of 0.
    """
    _check_stats(class_pixels, ("class_confidence", class_confidence), ("class_entropy", class_entropy))
    if not (0.0 < float(portion) <= 1.0):
        raise ValueError(f"lse_fast.selection: `portion` must be in (0, 1], got {portion}")
    if threshold_image not in THRESHOLD_IMAGES:
        raise ValueError(
            f"lse_fast.selection: `threshold_image` must be one of {THRESHOLD_IMAGES}, got {threshold_image!r}"
        )
    if rounding not in ROUNDINGS:
        raise ValueError(f"lse_fast.selection: `rounding` must be one of {ROUNDINGS}, got {rounding!r}")
    if zero_share not in ZERO_SHARES:
        raise ValueError(f"lse_fast.selection: `zero_share` must be one of {ZERO_SHARES}, got {zero_share!r}")
    n, num_columns = class_pixels.shape
    active = _classes(classes, num_columns)
    pixels = class_pixels.cpu()
    entropy = class_entropy.cpu().to(torch.float64)
    per_class = [torch.zeros(0, dtype=torch.int64) for _ in range(num_columns)]
    candidates = [0] * num_columns
    thresholds = torch.full((num_columns,), float("nan"), dtype=torch.float32)
    threshold_images = [None] * num_columns
    for c in active:
        ranked = ranking(pixels, class_confidence, c)
        candidates[c] = int(ranked.numel())
        if ranked.numel() == 0:
            continue  # never predicted: skipped
        k = share(ranked.numel(), portion, max(len(active), 1), rounding)
        if k == 0:
            if zero_share == "skip":
                continue
            t = int(ranked[0])  # authors' rule: the top image gives h_c, none is selected
        elif threshold_image == "first_unselected" and k < ranked.numel():
            t = int(ranked[k])
        else:
            t = int(ranked[k - 1])
        per_class[c] = ranked[:k].clone()
        threshold_images[c] = t
        thresholds[c] = float(entropy[t, c] / float(pixels[t, c]))
    chosen = [t for t in per_class if t.numel()]
    indices = torch.unique(torch.cat(chosen)) if chosen else torch.zeros(0, dtype=torch.int64)
    return Selection(indices, per_class, candidates, thresholds, threshold_images)


def candidates(
    class_pixels: torch.Tensor,
    class_confidence: torch.Tensor,
    max_per_class: int,
    *,
    classes=None,
) -> torch.Tensor:
    """Images that can still be selected: the union over classes of the top
    ``max_per_class`` images by U_c (same order as :func:`select`).

    Used while scoring to keep network outputs only for images that may be
    selected: with ``max_per_class = share(N, p, C) + 1`` (N the size of the
    whole set) an image outside this set on any prefix of the data set is
    outside it on the whole set, because per-class shares never exceed
    ``share(N, p, C)`` and adding images only pushes an image down a ranking.
    Rows of images not scored yet must have zero ``class_pixels``.
    """
    _check_stats(class_pixels, ("class_confidence", class_confidence))
    keep = []
    for c in _classes(classes, class_pixels.shape[1]):
        keep.append(ranking(class_pixels, class_confidence, c)[:max_per_class])
    if not keep:
        return torch.zeros(0, dtype=torch.int64)
    return torch.unique(torch.cat(keep))


def portions(start: float = 0.1, step: float = 0.05, stop: float = 0.4) -> list:
    """The portion schedule: start, start + step, ... up to stop inclusive
    (rounded to 6 decimals; the paper's 0.10 ... 0.40 gives 7 rounds)."""
    if step <= 0 or start <= 0 or stop < start:
        raise ValueError(
            f"lse_fast.selection: portions need 0 < start <= stop and step > 0, got {start}, {step}, {stop}"
        )
    out = []
    i = 0
    while True:
        p = round(start + i * step, 6)
        if p > stop + 1e-9:
            break
        out.append(p)
        i += 1
    return out


# --------------------------------------------------------------------------
# Entropy normalisation and filter maps (the paper's and the authors' variants)


def minmax_class_entropy(entropy: torch.Tensor, label: torch.Tensor, num_classes: int):
    """The authors' per-image per-class min-max normalisation of an entropy
    map: ``(E - min_c) / (max_c - min_c)`` over the pixels predicted c in the
    image, 0 where the class's entropy is constant in the image (the
    authors' code divides by zero there).

    Args:
        entropy: float ``[N, H, W]`` (any normalisation: min-max removes it).
        label: int64 ``[N, H, W]`` predicted class per pixel, in ``[0, num_classes)``.
        num_classes: C.

    Returns:
        ``(normalised [N, H, W] float32, min [N, C], max [N, C])``; min is
        ``+inf`` and max ``-inf`` for a class not predicted in the image.
    """
    if entropy.shape != label.shape or entropy.dim() != 3:
        raise ValueError(
            "lse_fast.selection.minmax_class_entropy: `entropy` and `label` must both be [N, H, W], "
            f"got {tuple(entropy.shape)} and {tuple(label.shape)}"
        )
    n = entropy.shape[0]
    e = entropy.reshape(n, -1).float()
    lab = label.reshape(n, -1)
    big = torch.full((n, num_classes), float("inf"), device=e.device)
    cmin = big.scatter_reduce(1, lab, e, reduce="amin", include_self=True)
    cmax = (-big).scatter_reduce(1, lab, e, reduce="amax", include_self=True)
    lo = cmin.gather(1, lab)
    hi = cmax.gather(1, lab)
    span = hi - lo
    norm = torch.where(span > 0, (e - lo) / span.clamp(min=1e-30), torch.zeros_like(e))
    return norm.reshape(entropy.shape), cmin, cmax


def minmax_class_entropy_sums(scores, num_classes: int) -> torch.Tensor:
    """Per-image per-class sums (float64 ``[N, C]``) of the min-max normalised
    entropy, from one :class:`lse_fast.ops.Scores` (its entropy map, labels
    and ``class_entropy``/``class_pixels``):
    ``sum (E - min) / span = (sum E - n * min) / span``, 0 for a class with
    constant entropy. Feed it to :func:`select` as ``class_entropy`` to get
    the authors' thresholds."""
    _, cmin, cmax = minmax_class_entropy(scores.entropy, scores.label, num_classes)
    span = cmax - cmin
    e_sum = scores.class_entropy.double() - scores.class_pixels.double() * cmin.double().nan_to_num(posinf=0.0)
    return torch.where(span > 0, e_sum / span.double().clamp(min=1e-30), torch.zeros_like(e_sum))


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"lse_fast.selection: `{name}` must be one of {choices}, got {value!r}")


def filter_map(probs: torch.Tensor, thresholds: torch.Tensor, entropy_norm: str = "log_c") -> torch.Tensor:
    """Keep-mask (float32 ``[N, H, W]``, 1 = keep) of probabilities
    ``[N, C, H, W]``: a pixel is kept where its normalised entropy is at most
    its predicted class's threshold (``E <= h[argmax]``; the authors' code
    keeps ``E < h``, which differs only at equality). ``entropy_norm``
    "log_c" divides the entropy (0 log 0 = 0) by log C (the paper),
    "minmax" rescales it per image and predicted class (the authors' code,
    :func:`minmax_class_entropy`)."""
    _check_choice("entropy_norm", entropy_norm, ENTROPY_NORMS)
    c = probs.shape[1]
    ent = torch.special.entr(probs).sum(1) / math.log(c) if c > 1 else torch.zeros_like(probs[:, 0])
    label = probs.argmax(1)
    if entropy_norm == "minmax":
        ent, _, _ = minmax_class_entropy(ent, label, c)
    return (ent <= thresholds.to(probs.device, torch.float32)[label]).to(torch.float32)


def pseudo_labels(
    probs: torch.Tensor,
    boxes: torch.Tensor,
    size,
    thresholds: torch.Tensor,
    *,
    image_size=None,
    entropy_norm: str = "log_c",
    filter_interp: str = "nearest",
    ignore_index: int = 255,
    align_corners: bool = False,
    ops=None,
) -> torch.Tensor:
    """uint8 pseudo-labels ``[K, *size]`` of the boxes, with the driver's
    filter variants.

    The paper's variant (``entropy_norm="log_c"``, ``filter_interp=
    "nearest"``) is :func:`lse_fast.ops.crop_pseudo_labels` itself. The
    authors' variants take the labels from the same op with every pixel
    kept and replace its filter map: min-max normalised entropy
    (``entropy_norm="minmax"``) and/or the keep-mask resized bilinearly and
    kept where > 0 (``filter_interp="bilinear"``, which dilates the kept
    region). ``ops`` is the module holding ``crop_pseudo_labels`` and
    ``crop_resize`` (default :mod:`lse_fast.ops`; the driver passes
    :mod:`lse_fast.reference` under ``--ops reference``).
    ``align_corners=True`` resamples as the authors' code does (their
    crops are resized with ``align_corners=True``); it is passed to
    ``crop_pseudo_labels`` (issue 18 item 2) and ``crop_resize``.
    """
    _check_choice("entropy_norm", entropy_norm, ENTROPY_NORMS)
    _check_choice("filter_interp", filter_interp, FILTER_INTERPS)
    if ops is None:
        import lse_fast.ops as ops
    # The flag is passed only when set, so an ops module without it (the
    # reference, or an op built before it) still serves the default.
    corners = {"align_corners": True} if align_corners else {}
    if entropy_norm == "log_c" and filter_interp == "nearest":
        return ops.crop_pseudo_labels(probs, boxes, size, thresholds, image_size=image_size,
                                      ignore_index=ignore_index, **corners)
    keep_all = torch.full_like(thresholds, math.inf)
    labels = ops.crop_pseudo_labels(probs, boxes, size, keep_all, image_size=image_size,
                                    ignore_index=ignore_index, **corners)
    p = probs.float()
    if image_size is not None and tuple(p.shape[2:]) != tuple(image_size):
        p = F.interpolate(p, size=tuple(image_size), mode="bilinear", align_corners=bool(align_corners))
    keep = filter_map(p, thresholds, entropy_norm)
    if filter_interp == "bilinear":
        crop_keep = ops.crop_resize(keep.unsqueeze(1), boxes, size, align_corners=bool(align_corners)).squeeze(1) > 0
    else:
        crop_keep = ops.crop_resize(keep.to(torch.uint8), boxes, size, mode="nearest").bool()
    return torch.where(crop_keep, labels, torch.full_like(labels, ignore_index))
