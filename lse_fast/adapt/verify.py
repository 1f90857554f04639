"""--verify: the ops seam (:class:`lse_fast.adapt.context.Ops`) with every
fused call compared with its pure-PyTorch reference on the live tensors of
the run. The steps call it as they call any op set; the largest deviation
per op and field is kept (the round loop records :meth:`VerifyingOps.report`
in metrics.json) and a deviation beyond tolerance stops the run."""

from __future__ import annotations

import torch

import lse_fast.ops as fused_ops
import lse_fast.reference as reference_ops


class VerifyingOps:
    """The fused ops, each call checked against the reference."""

    kind = "fused"
    TOL = {
        ("score", "confidence"): 1e-5,
        ("score", "entropy"): 1e-5,
        ("score", "label_disagreement"): 1e-4,  # share of pixels (near-ties)
        ("score", "class_pixels_rel"): 1e-4,
        ("score", "class_confidence_rel"): 1e-4,
        ("score", "class_entropy_rel"): 1e-4,
        ("focal_ce_loss", "value_rel"): 1e-5,
        ("focal_ce_loss", "grad_rel"): 1e-4,  # relative to the largest gradient element
        ("crop_resize", "abs"): 1e-4,
        ("crop_resize", "nearest_disagreement"): 1e-3,  # nearest taps of a mask (boundary ties)
        ("crop_pseudo_labels", "disagreement"): 1e-3,  # agreement >= 99.9%
    }

    def __init__(self, fused=fused_ops, reference=reference_ops):
        self.fused = fused
        self.ref = reference
        self.max = {}
        self.checks = 0

    # --- the four ops ----------------------------------------------------------
    def score(self, logits, size=None):
        out = self.fused.score(logits, size=size)
        r = self.ref.score(logits, size=size)
        self._rec("score", "confidence", (out.confidence - r.confidence).abs().max())
        self._rec("score", "entropy", (out.entropy - r.entropy).abs().max())
        self._rec("score", "label_disagreement", (out.label != r.label).double().mean())
        self._rec("score", "class_pixels_rel", _rel(out.class_pixels, r.class_pixels))
        self._rec("score", "class_confidence_rel", _rel(out.class_confidence, r.class_confidence))
        self._rec("score", "class_entropy_rel", _rel(out.class_entropy, r.class_entropy))
        return out

    def focal_ce_loss(self, logits, target, *, gamma=3.0, beta=0.1, **kw):
        out = self.fused.focal_ce_loss(logits, target, gamma=gamma, beta=beta, **kw)
        if out.dim() == 0:  # the driver's mean loss: value and gradient compared on a detached copy
            x = logits.detach().float().requires_grad_(True)
            a = self.fused.focal_ce_loss(x, target, gamma=gamma, beta=beta, **kw)
            (ga,) = torch.autograd.grad(a, x)
            y = logits.detach().float().requires_grad_(True)
            b = self.ref.focal_ce_loss(y, target, gamma=gamma, beta=beta, **kw)
            (gb,) = torch.autograd.grad(b, y)
            a, b = float(a.detach()), float(b.detach())
            self._rec("focal_ce_loss", "value_rel", abs(a - b) / max(abs(b), 1e-12))
            scale = float(gb.abs().max()) if gb.numel() else 0.0
            self._rec("focal_ce_loss", "grad_rel", float((ga - gb).abs().max()) / scale if scale > 0 else 0.0)
        return out

    def crop_resize(self, input, boxes, size, **kw):
        out = self.fused.crop_resize(input, boxes, size, **kw)
        r = self.ref.crop_resize(input, boxes, size, **kw)
        if kw.get("mode", "bilinear") == "nearest":
            self._rec("crop_resize", "nearest_disagreement", (out != r).double().mean() if r.numel() else 0.0)
        else:
            self._rec("crop_resize", "abs", (out.float() - r.float()).abs().max() if r.numel() else 0.0)
        return out

    def crop_pseudo_labels(self, probs, boxes, size, thresholds, **kw):
        out = self.fused.crop_pseudo_labels(probs, boxes, size, thresholds, **kw)
        r = self.ref.crop_pseudo_labels(probs, boxes, size, thresholds, **kw)
        self._rec("crop_pseudo_labels", "disagreement", (out != r).double().mean() if r.numel() else 0.0)
        return out

    # --- what the run records --------------------------------------------------
    def report(self):
        """metrics.json's 'verify': checks made, largest deviations, tolerances."""
        return {"checks": self.checks, "max_deviation": self.max,
                "tolerance": {f"{op}.{f}": t for (op, f), t in self.TOL.items()}}

    def _rec(self, op, fieldname, value):
        value = float(value)
        d = self.max.setdefault(op, {})
        d[fieldname] = max(d.get(fieldname, 0.0), value)
        self.checks += 1
        tol = self.TOL[(op, fieldname)]
        if not (value <= tol):
            raise RuntimeError(
                f"lse_fast.adapt --verify: fused {op} deviates from the reference: {fieldname} = {value:.3g} "
                f"> tolerance {tol:g}"
            )


def _rel(a, b):
    a = a.double()
    b = b.double()
    return float(((a - b).abs() / b.abs().clamp(min=1.0)).max()) if a.numel() else 0.0
