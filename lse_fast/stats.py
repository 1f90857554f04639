"""Bounded per-class summaries of the scoring pass, and the thresholds other
self-training methods select with (CBST/CRST, ESL, DAFormer/MIC).

:class:`ScoreSummary` accumulates, batch by batch, a per-class histogram of
the confidence (max-probability) and of the normalised entropy of every
pixel that :func:`lse_fast.ops.score` (or ``score_probs``) scored: int64
``[C, bins]`` each, filled with one ``torch.bincount`` of
``label * bins + bin`` per batch, on the device the scores live on. Nothing
per pixel is stored or sorted, so summarising the 2975 Cityscapes train
images costs ``2 * C * bins * 8`` bytes (0.6 MB for C = 19, bins = 2048)
where CRST keeps every pixel's confidence in host RAM and sorts it.

Error bound. A value ``v`` in ``[0, 1]`` falls in bin ``j = min(floor(v *
bins), bins - 1)`` (computed exactly: in float32 when ``bins`` is a power
of two and the values are float32 or half, else in float64);
values below 0 go to bin 0 and above 1 to the last bin. Every order
statistic (k-th largest, k-th smallest, median) read from the histograms is
returned as the lower edge ``j / bins`` of the bin holding the exact one, so
``0 <= exact - estimate <= 1 / bins`` for values in ``[0, 1]``: at most one
bin width, always on the low side. It is exact when the values are
multiples of ``1 / bins`` (e.g. quantised confidences). Pixel counts are
exact, so the share of a class's pixels at or above a bin edge is exact.

NaN: a pixel whose confidence or entropy is NaN is counted in
``nan_pixels[label]`` and in no histogram; every statistic of that class is
then NaN (a NaN never turns into a threshold silently).
"""

from __future__ import annotations

import torch

__all__ = ["ScoreSummary", "class_balanced_pseudo_labels", "class_subsample", "confidence_share"]

KINDS = ("confidence", "entropy")


def _err(msg):
    return ValueError(f"lse_fast.stats: {msg}")


class ScoreSummary:
    """Per-class histograms of confidence and entropy (see the module doc).

    Args:
        num_classes: C, the number of classes (label values in ``[0, C)``).
        bins: histogram bins over ``[0, 1]`` (default 2048: error bound
            ``1 / 2048 = 4.9e-4``).
        device: where the histograms live (default: the device of the first
            :meth:`update`).

    Attributes:
        confidence: int64 ``[C, bins]`` histogram of the max-probability per
            predicted class.
        entropy: int64 ``[C, bins]`` histogram of the normalised entropy per
            predicted class.
        nan_pixels: int64 ``[C]`` pixels with a NaN confidence or entropy.
    """

    def __init__(self, num_classes: int, bins: int = 2048, *, device=None):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise _err(f"`num_classes` must be a positive int, got {num_classes!r}")
        if not isinstance(bins, int) or isinstance(bins, bool) or not (1 <= bins <= 2**24):
            raise _err(f"`bins` must be an int in [1, 2^24], got {bins!r}")
        if num_classes * bins > 2**31 - 1:
            raise _err(f"`num_classes * bins` must stay below 2^31, got {num_classes} * {bins}")
        self.num_classes = num_classes
        self.bins = bins
        self.confidence = None
        self.entropy = None
        self.nan_pixels = None
        if device is not None:
            self._allocate(torch.device(device))

    def _allocate(self, device):
        c, b = self.num_classes, self.bins
        self.confidence = torch.zeros(c, b, dtype=torch.int64, device=device)
        self.entropy = torch.zeros(c, b, dtype=torch.int64, device=device)
        self.nan_pixels = torch.zeros(c, dtype=torch.int64, device=device)

    @property
    def device(self):
        return None if self.confidence is None else self.confidence.device

    def _bin(self, values):
        if self.bins & (self.bins - 1) == 0 and values.dtype != torch.float64:
            # A power of two: v * bins is exact in float32 (for float32 and
            # half inputs) and truncation is floor on [0, bins), so float32
            # gives the float64 bins, faster.
            scaled = values.float() * self.bins
        else:
            scaled = torch.floor(values.double() * self.bins)
        return scaled.clamp_(0, self.bins - 1).to(torch.int64)

    def update(self, scores, valid=None) -> "ScoreSummary":
        """Adds one batch. ``scores`` is a :class:`lse_fast.ops.Scores` (or
        anything with ``confidence``, ``entropy`` float ``[N, H, W]`` and
        ``label`` int ``[N, H, W]``); ``valid`` an optional bool ``[N, H, W]``
        mask of the pixels to count (e.g. :func:`class_subsample`, CRST's
        ``--ds-rate``). Returns self."""
        conf, ent, label = scores.confidence, scores.entropy, scores.label
        if conf.shape != label.shape or ent.shape != label.shape:
            raise _err(
                "`scores.confidence`, `scores.entropy` and `scores.label` must have one shape, got "
                f"{tuple(conf.shape)}, {tuple(ent.shape)}, {tuple(label.shape)}"
            )
        if label.dtype.is_floating_point or label.dtype == torch.bool:
            raise _err(f"`scores.label` must be an integer tensor, got {label.dtype}")
        if self.confidence is None:
            self._allocate(label.device)
        if label.device != self.device:
            raise _err(f"the summary lives on {self.device}, the scores on {label.device}")
        conf, ent, label = conf.reshape(-1), ent.reshape(-1), label.reshape(-1).to(torch.int64)
        if valid is not None:
            if valid.shape != scores.label.shape or valid.dtype != torch.bool:
                raise _err(
                    f"`valid` must be a bool tensor of shape {tuple(scores.label.shape)}, "
                    f"got {valid.dtype} {tuple(valid.shape)}"
                )
            keep = valid.reshape(-1).to(label.device)
            conf, ent, label = conf[keep], ent[keep], label[keep]
        if label.numel():
            lo, hi = (int(v) for v in torch.aminmax(label))
            if lo < 0 or hi >= self.num_classes:
                raise _err(f"`scores.label` must lie in [0, {self.num_classes}), got values in [{lo}, {hi}]")
        # one cheap reduction first: the NaN masks are built only when a sum is NaN
        if label.numel() and bool(torch.isnan(conf.sum() + ent.sum())):
            nan = torch.isnan(conf) | torch.isnan(ent)
            self.nan_pixels += torch.bincount(label[nan], minlength=self.num_classes)
            fine = ~nan
            conf, ent, label = conf[fine], ent[fine], label[fine]
        size = self.num_classes * self.bins
        base = label * self.bins
        self.confidence += torch.bincount(base + self._bin(conf), minlength=size).view(self.num_classes, self.bins)
        self.entropy += torch.bincount(base + self._bin(ent), minlength=size).view(self.num_classes, self.bins)
        return self

    def merge(self, other: "ScoreSummary") -> "ScoreSummary":
        """Adds another summary of the same shape (e.g. another rank's, or
        after ``torch.distributed.all_reduce`` of the three tensors)."""
        if (other.num_classes, other.bins) != (self.num_classes, self.bins):
            raise _err(
                f"cannot merge a summary of {other.num_classes} classes x {other.bins} bins into "
                f"{self.num_classes} x {self.bins}"
            )
        if other.confidence is None:
            return self
        if self.confidence is None:
            self._allocate(other.device)
        self.confidence += other.confidence.to(self.device)
        self.entropy += other.entropy.to(self.device)
        self.nan_pixels += other.nan_pixels.to(self.device)
        return self

    # ------------------------------------------------------------------ reading
    def _hist(self, kind):
        if kind not in KINDS:
            raise _err(f"`kind` must be one of {KINDS}, got {kind!r}")
        if self.confidence is None:
            self._allocate(torch.device("cpu"))
        return (self.confidence if kind == "confidence" else self.entropy).cpu()

    @property
    def pixels(self) -> torch.Tensor:
        """int64 ``[C]``: pixels counted per predicted class (NaN pixels included)."""
        return self._hist("confidence").sum(1) + self.nan_pixels.cpu()

    def kth_smallest(self, kind: str, index) -> torch.Tensor:
        """float64 ``[C]``: per class, the value at 0-based position ``index``
        (an int or an int tensor ``[C]``) of the class's values sorted
        ascending, as a bin's lower edge (error bound in the module doc).
        NaN where the position is outside ``[0, n_c)`` or the class has NaN
        pixels."""
        hist = self._hist(kind)
        index = torch.as_tensor(index, dtype=torch.int64).expand(self.num_classes)
        counts = hist.sum(1)
        cum = hist.cumsum(1)  # cum[c, j] = values of class c in bins <= j
        # first bin whose cumulative count exceeds the index
        j = torch.searchsorted(cum, (index + 1).clamp(min=1).unsqueeze(1)).squeeze(1).clamp(max=self.bins - 1)
        out = j.to(torch.float64) / self.bins
        bad = (index < 0) | (index >= counts) | (self.nan_pixels.cpu() > 0)
        return torch.where(bad, torch.full_like(out, float("nan")), out)

    def kth_largest(self, kind: str, k) -> torch.Tensor:
        """float64 ``[C]``: per class, the k-th largest value (1-based ``k``,
        int or int tensor ``[C]``), as a bin's lower edge. NaN where ``k`` is
        outside ``[1, n_c]`` or the class has NaN pixels."""
        counts = self._hist(kind).sum(1)
        k = torch.as_tensor(k, dtype=torch.int64).expand(self.num_classes)
        out = self.kth_smallest(kind, counts - k)
        return torch.where(k < 1, torch.full_like(out, float("nan")), out)

    def class_balanced_thresholds(self, portion: float, *, empty: float = 1.0) -> torch.Tensor:
        """CBST/CRST's class-balanced confidence thresholds, float64 ``[C]``:
        per class, the ``floor(n_c * portion)``-th largest confidence (the
        portion p of its most confident pixels is kept by ``confidence >=
        threshold``); ``empty`` (CRST: 1.0) where that count is 0. Within one
        bin width below the exact value (see the module doc)."""
        if not (0.0 <= float(portion) <= 1.0):
            raise _err(f"`portion` must be in [0, 1], got {portion}")
        counts = self._hist("confidence").sum(1)
        k = torch.floor(counts.to(torch.float64) * float(portion)).to(torch.int64)
        out = self.kth_largest("confidence", k)
        return torch.where((k == 0) & (self.nan_pixels.cpu() == 0), torch.full_like(out, float(empty)), out)

    def median_entropy(self, *, floor: float = 0.1, empty: float = 0.0) -> torch.Tensor:
        """ESL's per-class entropy thresholds, float64 ``[C]``: the entropy at
        ascending position ``round(n_c / 2)`` (round half to even, as ESL's
        ``np.round``: the upper median for even ``n_c``), ``empty`` where the
        class has no pixel, then raised to at least ``floor`` (ESL's
        ``cfg.ESL.THRESHOLD = 0.1``; NaN stays NaN). ESL ignores a pixel
        where its entropy is above its class's threshold."""
        counts = self._hist("entropy").sum(1)
        index = torch.round(counts.to(torch.float64) * 0.5).to(torch.int64)
        out = self.kth_smallest("entropy", index)
        out = torch.where((counts == 0) & (self.nan_pixels.cpu() == 0), torch.full_like(out, float(empty)), out)
        return torch.where(out < floor, torch.full_like(out, float(floor)), out)

    def share_at_least(self, kind: str, edge_bin: int) -> torch.Tensor:
        """float64 ``[C]``: exact share of each class's pixels whose value lies
        in bin ``edge_bin`` or above, i.e. ``>= edge_bin / bins`` (NaN for a
        class without pixels)."""
        hist = self._hist(kind)
        if not (0 <= int(edge_bin) <= self.bins):
            raise _err(f"`edge_bin` must be in [0, {self.bins}], got {edge_bin}")
        counts = self.pixels.to(torch.float64)
        above = hist[:, int(edge_bin):].sum(1).to(torch.float64)
        return above / counts  # 0 / 0 = NaN for an empty class


def confidence_share(confidence: torch.Tensor, threshold: float, *, per_image: bool = False) -> torch.Tensor:
    """DAFormer/MIC's pseudo-label weight: the share of pixels whose
    max-probability is at least ``threshold`` (DAFormer: 0.968).

    Args:
        confidence: float ``[N, H, W]``, e.g. ``lse_fast.ops.score(...).confidence``.
        threshold: the confidence a pixel needs.
        per_image: False (DAFormer's rule: one share over the whole batch,
            a 0-dim float32 tensor) or True (float32 ``[N]``, one per image).

    A NaN confidence counts as below the threshold (as ``torch.ge`` does).
    Broadcast it to a per-pixel weight with ``share.view(-1, 1, 1).expand_as(confidence)``
    (per image) or ``torch.full_like(confidence, share)`` (batch).
    """
    if not isinstance(confidence, torch.Tensor) or confidence.dim() != 3 or not confidence.is_floating_point():
        got = tuple(confidence.shape) if isinstance(confidence, torch.Tensor) else type(confidence).__name__
        raise _err(f"confidence_share: `confidence` must be a float tensor [N, H, W], got {got}")
    above = confidence >= threshold
    if per_image:
        return above.flatten(1).sum(1, dtype=torch.int64).to(torch.float32) / max(1, above[0].numel())
    return above.sum(dtype=torch.int64).to(torch.float32) / max(1, above.numel())


def class_balanced_pseudo_labels(probs: torch.Tensor, thresholds: torch.Tensor, *, ignore_index: int = 255):
    """CBST's class-normalised pseudo-labels: ``argmax_c p_c / t_c``, ignored
    (``ignore_index``) where ``max_c p_c / t_c < 1``. ``probs`` float
    ``[N, C, H, W]`` (softmax outputs), ``thresholds`` ``[C]``
    (:meth:`ScoreSummary.class_balanced_thresholds`). Returns int64 ``[N, H, W]``."""
    if probs.dim() != 4 or thresholds.shape != (probs.shape[1],):
        raise _err(
            "class_balanced_pseudo_labels: `probs` must be [N, C, H, W] and `thresholds` [C], got "
            f"{tuple(probs.shape)} and {tuple(thresholds.shape)}"
        )
    weighted = probs / thresholds.to(probs.device, probs.dtype).view(1, -1, 1, 1)
    label = weighted.argmax(1)  # first maximum, as np.argmax
    best = weighted.amax(1)
    return torch.where(best < 1, torch.full_like(label, ignore_index), label)


def class_subsample(label: torch.Tensor, every: int) -> torch.Tensor:
    """CRST's ``--ds-rate``: a bool ``[N, H, W]`` mask keeping, in every
    image, the 1st, (1 + every)-th, (1 + 2 every)-th ... pixel of each
    predicted class in raster order (their ``conf[label == c][0::ds_rate]``).
    Pass it as ``valid`` to :meth:`ScoreSummary.update` to count what CRST
    counts; the summary itself does not need it (its size does not grow with
    the pixels)."""
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise _err(f"class_subsample: `every` must be an int >= 1, got {every!r}")
    if label.dim() != 3 or label.dtype.is_floating_point or label.dtype == torch.bool:
        raise _err(f"class_subsample: `label` must be an integer tensor [N, H, W], got {label.dtype} {tuple(label.shape)}")
    n = label.shape[0]
    flat = label.reshape(n, -1).to(torch.int64)
    order = torch.sort(flat, dim=1, stable=True).indices  # pixels grouped by class, raster order inside
    sorted_label = flat.gather(1, order)
    pos = torch.arange(flat.shape[1], device=label.device).expand(n, -1)
    # position of each group's first pixel: where the sorted label changes
    start = torch.ones_like(sorted_label, dtype=torch.bool)
    start[:, 1:] = sorted_label[:, 1:] != sorted_label[:, :-1]
    first = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), dim=1).values
    keep_sorted = (pos - first) % every == 0
    keep = torch.empty_like(keep_sorted)
    keep.scatter_(1, order, keep_sorted)
    return keep.reshape(label.shape)
