"""--verify: every fused op compared with its pure-PyTorch reference on the
live batches of a run; the largest deviation per op and field goes into
metrics.json, and a deviation beyond tolerance stops the run."""

from __future__ import annotations

import torch

import lse_fast.ops as fused_ops
import lse_fast.reference as reference_ops


class Verifier:
    """Compares every fused op with its reference on the live batches of a
    run and keeps the largest deviation per op and field."""

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
        ("crop_pseudo_labels", "disagreement"): 1e-3,  # agreement >= 99.9%
    }

    def __init__(self):
        self.fused = fused_ops
        self.ref = reference_ops
        self.max = {}
        self.checks = 0

    def _rec(self, op, fieldname, value):
        value = float(value)
        key = (op, fieldname)
        d = self.max.setdefault(op, {})
        d[fieldname] = max(d.get(fieldname, 0.0), value)
        self.checks += 1
        tol = self.TOL[key]
        if not (value <= tol):
            raise RuntimeError(
                f"lse_fast.adapt --verify: fused {op} deviates from the reference: {fieldname} = {value:.3g} "
                f"> tolerance {tol:g}"
            )

    @staticmethod
    def _rel(a, b):
        a = a.double()
        b = b.double()
        return float(((a - b).abs() / b.abs().clamp(min=1.0)).max()) if a.numel() else 0.0

    def score(self, logits, fused, size=None):
        r = self.ref.score(logits, size=size)
        self._rec("score", "confidence", (fused.confidence - r.confidence).abs().max())
        self._rec("score", "entropy", (fused.entropy - r.entropy).abs().max())
        self._rec("score", "label_disagreement", (fused.label != r.label).double().mean())
        self._rec("score", "class_pixels_rel", self._rel(fused.class_pixels, r.class_pixels))
        self._rec("score", "class_confidence_rel", self._rel(fused.class_confidence, r.class_confidence))
        self._rec("score", "class_entropy_rel", self._rel(fused.class_entropy, r.class_entropy))

    def loss(self, logits, target, gamma, beta):
        x = logits.detach().float().requires_grad_(True)
        a = self.fused.focal_ce_loss(x, target, gamma=gamma, beta=beta)
        (ga,) = torch.autograd.grad(a, x)
        y = logits.detach().float().requires_grad_(True)
        b = self.ref.focal_ce_loss(y, target, gamma=gamma, beta=beta)
        (gb,) = torch.autograd.grad(b, y)
        a, b = float(a.detach()), float(b.detach())
        self._rec("focal_ce_loss", "value_rel", abs(a - b) / max(abs(b), 1e-12))
        scale = float(gb.abs().max()) if gb.numel() else 0.0
        self._rec("focal_ce_loss", "grad_rel", float((ga - gb).abs().max()) / scale if scale > 0 else 0.0)

    def crop_resize(self, images, boxes, size, fused_out):
        r = self.ref.crop_resize(images, boxes, size)
        self._rec("crop_resize", "abs", (fused_out.float() - r.float()).abs().max() if r.numel() else 0.0)

    def pseudo(self, probs, boxes, size, thresholds, image_size, fused_out):
        r = self.ref.crop_pseudo_labels(probs, boxes, size, thresholds, image_size=image_size)
        dis = (fused_out != r).double().mean() if r.numel() else 0.0
        self._rec("crop_pseudo_labels", "disagreement", dis)

    def report(self):
        return {"checks": self.checks, "max_deviation": self.max,
                "tolerance": {f"{op}.{f}": t for (op, f), t in self.TOL.items()}}
