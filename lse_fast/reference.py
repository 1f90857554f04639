"""Pure-PyTorch references of every lse_fast op: the truth the tests compare
against, and the `--ops reference` path of the driver. Written for clarity,
in the way the method's public code computes these quantities.

Independent of the code it checks: nothing here comes from lse_fast.ops.
Inputs are assumed valid (the ops check them); the reference checks only
the data the results depend on (box values, targets), so that a bad box or
target is an error here too rather than a silently wrong truth."""

import math
from collections import namedtuple

import torch

# The fields of lse_fast.ops.Scores, in its order.
Scores = namedtuple("Scores", "confidence label entropy class_pixels class_confidence class_entropy")


def _check_box_values(op, boxes, n, h, w):
    """Every box inside its image (the ops make the same check)."""
    for k, row in enumerate(boxes.detach().cpu().double().tolist()):
        idx, x1, y1, x2, y2 = row
        if not all(math.isfinite(v) for v in row):
            raise RuntimeError(f"lse_fast.reference.{op}: `boxes` row {k} has a non-finite value: {row}")
        if idx != int(idx) or not 0 <= idx < n:
            raise RuntimeError(f"lse_fast.reference.{op}: `boxes` row {k}: batch index {idx:g} is not an integer in [0, {n})")
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise RuntimeError(
                f"lse_fast.reference.{op}: `boxes` row {k} = (x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g}) must satisfy "
                f"0 <= x1 < x2 <= {w} and 0 <= y1 < y2 <= {h}"
            )


def _live(w, x):
    """w * x, or 0 where w == 0: the zero-weight-tap rule of the scoring
    resamplers (a tap of weight exactly 0 adds nothing, even -inf or NaN)."""
    return torch.where(w == 0, torch.zeros_like(x), w * x)


def upsample_bilinear(x, size, *, align_corners=False):
    """``F.interpolate(x, size, mode="bilinear", align_corners=align_corners)``
    of an [N, C, H, W] map, with F.interpolate's source-index rule and
    arithmetic, under the zero-weight-tap rule of the ops' upsampled scoring
    paths: a tap whose weight is exactly 0 (the second tap at an exact source
    position: the borders, clamped taps, the grid points of
    align_corners=True) contributes nothing, so a ``-inf`` logit there gives
    a finite value where F.interpolate gives ``0 * -inf = NaN``. A tap with a
    weight > 0 counts as usual (``-inf`` there gives ``-inf``). On finite
    input it equals F.interpolate up to float rounding. Taps are computed in
    float32 (float64 for float64 input, as F.interpolate)."""
    oh, ow = size
    _, _, h, w = x.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    zero = torch.zeros(1, dtype=acc, device=x.device)
    y0, y1, ly = _linear_taps(zero, zero + h, oh, h, align_corners, acc)
    x0, x1, lx = _linear_taps(zero, zero + w, ow, w, align_corners, acc)
    y0, y1, ly, x0, x1, lx = y0[0], y1[0], ly[0].to(x.dtype), x0[0], x1[0], lx[0].to(x.dtype)

    def tap(iy, ix):
        return x[:, :, iy[:, None], ix[None, :]]  # [N, C, oh, ow]

    ly, lx = ly[:, None], lx[None, :]
    top = (1 - lx) * tap(y0, x0) + _live(lx, tap(y0, x1))
    bottom = (1 - lx) * tap(y1, x0) + _live(lx, tap(y1, x1))
    return (1 - ly) * top + _live(ly, bottom)


def score(logits: torch.Tensor, size=None, *, align_corners=False) -> Scores:
    """Reference of :func:`lse_fast.ops.score`.

    Computes in float64 for float64 input (the accuracy oracle) and in
    float32 otherwise; accepts float64 unlike the fused op. With `size`,
    scores ``F.interpolate(logits, size, mode="bilinear",
    align_corners=align_corners)`` computed in float32 (float64 for
    float64), materialising it as the method's public code does, but under
    the zero-weight-tap rule (:func:`upsample_bilinear`). A ``-inf``
    logit is p = 0 and adds 0 to the entropy (0 log 0 = 0); NaN, ``+inf``
    and all-``-inf`` pixels give NaN, as softmax does.
    """
    if size is not None:
        x = logits if logits.dtype == torch.float64 else logits.float()
        return score(upsample_bilinear(x, size, align_corners=align_corners))
    x = logits if logits.dtype == torch.float64 else logits.float()
    log_p = torch.log_softmax(x, dim=1)
    p = log_p.exp()
    # p log p with 0 log 0 = 0 (p = 0 where log_p = -inf); NaN stays NaN.
    plogp = torch.where(p == 0, torch.zeros_like(p), p * log_p)
    return _scores(x, p, plogp)


def score_probs(probs: torch.Tensor, size=None, *, align_corners=False) -> Scores:
    """Reference of :func:`lse_fast.ops.score_probs`: max, argmax and
    ``-sum p log p / log C`` (``torch.special.entr``: 0 log 0 = 0) of the
    probabilities, upsampled first by :func:`upsample_bilinear` (``F.interpolate(probs,
    size, mode="bilinear", align_corners=align_corners)`` with the zero-weight-tap
    rule) when `size` is given.
    float64 for float64 input, float32 otherwise."""
    p = probs if probs.dtype == torch.float64 else probs.float()
    if size is not None:
        p = upsample_bilinear(p, size, align_corners=align_corners)
    # p log p with 0 log 0 = 0 (a p <= 0 adds 0); NaN and +-inf give NaN.
    plogp = torch.where(p > 0, p * torch.log(p.clamp(min=torch.finfo(p.dtype).tiny)), torch.zeros_like(p)) + (p - p)
    return _scores(p, p, plogp)


def _scores(x, p, plogp):
    """Scores of per-class values x (argmax), probabilities p and p log p."""
    n, c, _, _ = x.shape
    label = x.argmax(dim=1)  # first maximum on ties
    confidence = p.gather(1, label.unsqueeze(1)).squeeze(1)
    bad = torch.isnan(plogp).any(dim=1)
    confidence = torch.where(bad, torch.full_like(confidence, math.nan), confidence)
    if c > 1:
        entropy = (-plogp.sum(dim=1) / math.log(c)).clamp(0.0, 1.0)
    else:
        entropy = torch.where(bad, torch.full_like(confidence, math.nan), torch.zeros_like(confidence))
    flat_label = label.reshape(n, -1)
    class_pixels = torch.zeros(n, c, dtype=torch.int64, device=x.device)
    class_pixels.scatter_add_(1, flat_label, torch.ones_like(flat_label))
    class_confidence = torch.zeros(n, c, dtype=x.dtype, device=x.device)
    class_confidence.scatter_add_(1, flat_label, confidence.reshape(n, -1))
    class_entropy = torch.zeros(n, c, dtype=x.dtype, device=x.device)
    class_entropy.scatter_add_(1, flat_label, entropy.reshape(n, -1))
    return Scores(confidence, label, entropy, class_pixels, class_confidence, class_entropy)


def focal_ce_loss(logits, target, *, gamma=3.0, beta=0.1, ignore_index=255, reduction="mean", weight=None,
                  pixel_weight=None, ce_weight=1.0):
    """Reference of :func:`lse_fast.ops.focal_ce_loss` (autograd gives its
    gradient, and its second-order gradient). Computes in float32, or
    float64 for float64 logits. Per valid pixel
    ``pixel_weight * weight[t] * (ce_weight * ce + beta * (1 - p_t)^gamma * ce)``;
    "mean" divides by the valid pixels (by ``weight[t]`` summed over them
    when ``weight`` is given), "mean_all" by ``N * H * W``."""
    x = logits if logits.dtype == torch.float64 else logits.float()
    c = x.shape[1]
    target = target.long()
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= c))
    if bool(bad.any()):
        value = int(target[bad][0])
        raise RuntimeError(
            f"lse_fast.reference.focal_ce_loss: `target` value {value} is outside [0, {c}) and is not ignore_index ({ignore_index})"
        )
    safe = torch.where(valid, target, torch.zeros_like(target))
    log_pt = torch.log_softmax(x, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    ce = -log_pt
    focal = (1 - log_pt.exp()).pow(gamma) * ce
    per_pixel = ce_weight * ce + beta * focal
    class_w = None
    if weight is not None:
        class_w = weight.to(x.dtype)[safe]
        per_pixel = class_w * per_pixel
    if pixel_weight is not None:
        per_pixel = pixel_weight.to(x.dtype) * per_pixel
    loss = torch.where(valid, per_pixel, torch.zeros_like(ce))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean_all":
        return loss.sum() / target.numel()
    if not bool(valid.any()):
        return loss.sum() * 0
    if class_w is not None:
        return loss.sum() / torch.where(valid, class_w, torch.zeros_like(class_w)).sum()
    return loss.sum() / valid.sum()


# ---------------------------------------------------------------------------
# Crop-resize and pseudo-labels from crops


def _linear_taps(start, extent, out_size, limit, align_corners, acc):
    """Source taps along one axis for every box: indices i0, i1 [K, out] and
    the weight l1 of i1, for the box [start, start + extent) resized to
    out_size. An integer box gives exactly F.interpolate's taps on the crop."""
    dst = torch.arange(out_size, dtype=acc, device=start.device)
    fstart = start.floor()
    frac = (start - fstart)[:, None]
    if align_corners:
        scale = (extent - 1) / (out_size - 1) if out_size > 1 else torch.zeros_like(extent)
        src = scale[:, None] * dst
    else:
        scale = extent / out_size
        src = scale[:, None] * (dst + 0.5) - 0.5
    src = src.clamp(min=0)
    u = frac + src
    cell = u.floor()
    l1 = u - cell
    hi = ((start + extent).ceil().clamp(max=limit) - 1)[:, None]
    i0 = torch.minimum(fstart[:, None] + cell, hi)
    i1 = torch.minimum(i0 + 1, hi)
    return i0.long(), i1.long(), l1


def _nearest_taps(start, extent, out_size, limit):
    """Source index [K, out] of PyTorch's "nearest-exact" on each box."""
    dst = torch.arange(out_size, dtype=torch.float64, device=start.device)
    scale = (extent / out_size).double()  # float32 scale, product in double as PyTorch
    rel = ((dst + 0.5) * scale[:, None]).float()
    fstart = start.floor()
    u = (start - fstart)[:, None] + rel
    hi = ((start + extent).ceil().clamp(max=limit) - 1)[:, None]
    return torch.minimum(fstart[:, None] + u.floor(), hi).long()


def _box_columns(boxes):
    b = boxes[:, 0].long()
    x1, y1, x2, y2 = boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    return b, x1, y1, x2 - x1, y2 - y1


def crop_resize(input, boxes, size, *, mode="bilinear", align_corners=False):
    """Reference of :func:`lse_fast.ops.crop_resize`: gathers the taps of
    every box explicitly (differentiable through autograd). Accepts float64."""
    return _crop_resize(input, boxes, size, mode, align_corners, live_taps=False)


def _crop_resize(input, boxes, size, mode, align_corners, live_taps):
    squeeze = input.dim() == 3
    x = input.unsqueeze(1) if squeeze else input
    oh, ow = size
    n, c, h, w = x.shape
    _check_box_values("crop_resize", boxes, n, h, w)
    boxes = boxes.to(device=input.device, dtype=torch.float32)
    k = boxes.shape[0]
    b, x1, y1, bw, bh = _box_columns(boxes)
    if mode == "nearest":
        iy = _nearest_taps(y1, bh, oh, h)  # [K, oh]
        ix = _nearest_taps(x1, bw, ow, w)  # [K, ow]
        out = x[b[:, None, None], :, iy[:, :, None], ix[:, None, :]]  # [K, oh, ow, C]
        out = out.permute(0, 3, 1, 2).contiguous()
    else:
        # Taps in float32 for every dtype (as the kernels); values in float64 for float64.
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        y0, y1i, ly = _linear_taps(y1, bh, oh, h, align_corners, torch.float32)
        x0, x1i, lx = _linear_taps(x1, bw, ow, w, align_corners, torch.float32)
        ly, lx = ly.to(acc), lx.to(acc)
        xf = x.to(acc)
        bb = b[:, None, None]

        def tap(iy, ix):
            return xf[bb, :, iy[:, :, None], ix[:, None, :]]  # [K, oh, ow, C]

        ly = ly[:, :, None, None]
        lx = lx[:, None, :, None]
        # live: the zero-weight-tap rule (crop_pseudo_labels); crop_resize
        # keeps F.interpolate's plain products (0 * -inf = NaN).
        mul = _live if live_taps else torch.mul
        top = tap(y0, x0) * (1 - lx) + mul(lx, tap(y0, x1i))
        bottom = tap(y1i, x0) * (1 - lx) + mul(lx, tap(y1i, x1i))
        out = (top * (1 - ly) + mul(ly, bottom)).permute(0, 3, 1, 2).contiguous().to(x.dtype)
    if k == 0:
        out = x.new_empty((0, c, oh, ow))
    return out[:, 0] if squeeze else out


def crop_pseudo_labels(probs, boxes, size, thresholds, *, image_size=None, ignore_index=255, align_corners=False):
    """Reference of :func:`lse_fast.ops.crop_pseudo_labels`, materialising
    the full-resolution probability map P as the method's public code does
    (both bilinear resamplings with `align_corners`, under the zero-weight-tap
    rule of :func:`upsample_bilinear`). A pixel whose resampled
    probabilities are not all finite (at the crop pixel or at the filter's
    full-resolution pixel) is ``ignore_index``."""
    oh, ow = size
    H, W = probs.shape[2:] if image_size is None else image_size
    _check_box_values("crop_pseudo_labels", boxes, probs.shape[0], H, W)
    p = probs.float()
    c = p.shape[1]
    if (H, W) != tuple(p.shape[2:]):
        p = upsample_bilinear(p, (H, W), align_corners=align_corners)
    entropy = torch.special.entr(p).sum(1) / math.log(c) if c > 1 else torch.zeros_like(p[:, 0])
    label = p.argmax(1)
    keep = (entropy <= thresholds.to(p.device, torch.float32)[label]) & torch.isfinite(p).all(1)
    crop = _crop_resize(p, boxes, (oh, ow), "bilinear", align_corners, live_taps=True)
    crop_label = crop.argmax(1)
    crop_keep = crop_resize(keep.to(torch.uint8), boxes, (oh, ow), mode="nearest").bool() & torch.isfinite(crop).all(1)
    return torch.where(crop_keep, crop_label, torch.full_like(crop_label, ignore_index)).to(torch.uint8)
