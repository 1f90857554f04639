"""Shared test helpers: one assert that reports the worst element, the share
of failing elements and NaN/inf mismatches, and the tolerance tables."""

import torch

# Tolerances of the fused float32 results against a float64 computation on
# the same (already rounded) input values, per logits dtype. The math runs in
# float32 for every input dtype, so the bounds are the same.
SCORE_TOL = {
    torch.float32: dict(confidence=1e-6, entropy=2e-6, class_rtol=1e-5),
    torch.float16: dict(confidence=1e-6, entropy=2e-6, class_rtol=1e-5),
    torch.bfloat16: dict(confidence=1e-6, entropy=2e-6, class_rtol=1e-5),
}

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def assert_close(actual, expected, *, atol=0.0, rtol=0.0, name="tensor"):
    """Asserts |actual - expected| <= atol + rtol * |expected| elementwise,
    with NaN only where expected is NaN and infinities matching."""
    actual = torch.as_tensor(actual).detach().cpu()
    expected = torch.as_tensor(expected).detach().cpu()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a = actual.double()
    e = expected.double()
    nan_mismatch = torch.isnan(a) != torch.isnan(e)
    inf_mismatch = (torch.isinf(a) | torch.isinf(e)) & (a != e)
    finite = torch.isfinite(a) & torch.isfinite(e)
    err = torch.where(finite, (a - e).abs(), torch.zeros_like(a))
    bound = atol + rtol * e.abs()
    bad = (err > torch.where(finite, bound, torch.full_like(bound, float("inf")))) | nan_mismatch | inf_mismatch
    if bool(bad.any()):
        n_bad = int(bad.sum())
        excess = torch.where(bad, err - bound, torch.full_like(err, -float("inf")))
        worst = int(excess.flatten().argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape)) if a.dim() else ()
        raise AssertionError(
            f"{name}: {n_bad} of {a.numel()} elements ({100.0 * n_bad / max(a.numel(), 1):.4f}%) "
            f"outside atol={atol:g} rtol={rtol:g}; worst at {idx}: got {a.flatten()[worst].item()!r}, "
            f"expected {e.flatten()[worst].item()!r} (|diff| {err.flatten()[worst].item():.3g}); "
            f"NaN mismatches {int(nan_mismatch.sum())}, inf mismatches {int(inf_mismatch.sum())}"
        )


def make_layout(x, layout):
    """The same values as `x` ([N, C, H, W]) in another memory layout."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":  # strided in every dimension, H and W not fusable
        n, c, h, w = x.shape
        big = torch.zeros(n, 2 * c, h + 1, 2 * w + 3, dtype=x.dtype, device=x.device)
        view = big[:, ::2, 1:, 1 : 2 * w + 1 : 2]
        view.copy_(x)
        return view
    if layout == "transposed":  # W-major planes: H and W swapped in memory
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    raise ValueError(layout)


LAYOUTS = ["contiguous", "channels_last", "sliced", "transposed"]
