"""Batched crop-resize and pseudo-labels from crops at the paper's scale:
2 images of 512x1024, 8 boxes of 256x512 resized to 512x1024; image (3 ch),
probabilities (19 ch) and mask. crop_resize against a Python loop of
F.interpolate (+ torch.cat), crop_pseudo_labels against the reference path
(full-resolution P, entropy filter, crop-resize, argmax) from stride-8
probabilities; both also against torch.compile of their reference (which
breaks its graph once, at the data-dependent box check). Reports time, GB/s
(output written), that as a share of the machine's copy bandwidth measured in
the same run (GB/s written by `clone` into a fresh buffer), and peak extra
memory.
    pytest benchmarks/ --benchmark-only
"""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.conftest import copy_roof, finish, provider_fn, record, sync
from benchmarks.memory import peak_extra_mib
from lse_fast import ops, reference
from lse_fast.patches import random_boxes

IMAGE = (512, 1024)
OUT = (512, 1024)
BOXES_PER_IMAGE = 4


def make_inputs(kind, device):
    gen = torch.Generator().manual_seed(0)
    n, (h, w) = 2, IMAGE
    boxes = random_boxes(n, IMAGE, k=BOXES_PER_IMAGE, generator=gen)
    if kind == "image":
        x = torch.rand(n, 3, h, w, generator=gen)
    elif kind == "probs":
        x = torch.softmax(torch.randn(n, 19, h, w, generator=gen), 1)
    elif kind == "mask":
        x = (torch.rand(n, h, w, generator=gen) < 0.7).to(torch.uint8)
    else:  # stride-8 probabilities for the pseudo-labels
        x = torch.softmax(torch.randn(n, 19, h // 8, w // 8, generator=gen) * 3, 1)
    return x.to(device), boxes.to(device)


def interpolate_loop(x, boxes, mode):
    """What a user writes without lse_fast: one F.interpolate per box."""
    out = []
    squeeze = x.dim() == 3
    xs = x[:, None] if squeeze else x
    for b, x1, y1, x2, y2 in boxes.long().tolist():
        kw = {"align_corners": False} if mode == "bilinear" else {}
        out.append(F.interpolate(xs[b : b + 1, :, y1:y2, x1:x2], OUT, mode=mode, **kw))
    out = torch.cat(out)
    return out[:, 0] if squeeze else out


def _crop_reference(x, boxes, mode):
    return reference.crop_resize(x, boxes, OUT, mode=mode)


def _crop_fused(x, boxes, mode):
    return ops.crop_resize(x, boxes, OUT, mode=mode)


def _pseudo_reference(p, boxes, thr):
    return reference.crop_pseudo_labels(p, boxes, OUT, thr, image_size=IMAGE)


def _pseudo_fused(p, boxes, thr):
    return ops.crop_pseudo_labels(p, boxes, OUT, thr, image_size=IMAGE)


def crop_fn(kind, provider):
    mode = "nearest" if kind == "mask" else "bilinear"
    if provider == "loop":
        return lambda x, boxes: interpolate_loop(x, boxes, "nearest-exact" if mode == "nearest" else mode)
    impl = provider_fn(provider, _crop_fused, _crop_reference)
    return lambda x, boxes: impl(x, boxes, mode)


def pseudo_fn(provider):
    thr = torch.full((19,), 0.5)
    impl = provider_fn({"reference": "eager"}.get(provider, provider), _pseudo_fused, _pseudo_reference)
    return lambda p, boxes: impl(p, boxes, thr.to(p.device))


def copy_roof_gbs(device):
    """GB/s written by `clone` into a fresh buffer (benchmarks/conftest.py):
    the same kind of write as the crop ops' fresh outputs."""
    return copy_roof(device)[0]


def time_provider(benchmark, device, fn, inputs, rounds, setup):
    """Times fn(*inputs), then (CPU) its peak extra memory in a fresh
    process whose `setup` defines the same `fn` and `inputs`."""

    def run():
        fn(*inputs)
        sync(device)

    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    finish(benchmark, device, benchmark.extra_info["bytes"])
    if device == "cpu":
        benchmark.extra_info["peak_extra_MiB"] = round(peak_extra_mib(setup, "y = fn(*inputs); del y"), 1)


@pytest.mark.parametrize("provider", ["fused", "loop", "compile"])
@pytest.mark.parametrize("kind", ["image", "probs", "mask"])
def test_crop_resize(benchmark, device, kind, provider):
    x, boxes = make_inputs(kind, device)
    fn = crop_fn(kind, provider)
    want = crop_fn(kind, "fused")(x, boxes)
    got = fn(x, boxes)
    if kind == "mask":
        assert (got == want).double().mean() > 0.999
    else:
        torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    nbytes = want.numel() * want.element_size()
    record(benchmark, device=device, dtype=x.dtype, shape=tuple(want.shape), provider=provider, nbytes=nbytes)
    benchmark.extra_info["output_MiB"] = round(nbytes / 2**20, 1)
    setup = (
        "from benchmarks.test_bench_crop import make_inputs, crop_fn\n"
        f"inputs = make_inputs({kind!r}, 'cpu')\nfn = crop_fn({kind!r}, {provider!r})"
    )
    roof = copy_roof_gbs(device)  # before the timed rounds, same process and run
    time_provider(benchmark, device, fn, (x, boxes), 5, setup)
    benchmark.extra_info["copy_roof_GB/s_written"] = round(roof, 2)
    benchmark.extra_info["share_of_copy_roof"] = round(benchmark.extra_info["GB/s"] / roof, 3)


@pytest.mark.parametrize("provider", ["fused", "reference", "compile"])
def test_crop_pseudo_labels(benchmark, device, provider):
    p, boxes = make_inputs("lowres", device)
    fn = pseudo_fn(provider)
    want = pseudo_fn("reference")(p, boxes)
    got = fn(p, boxes)
    assert (got.cpu() == want.cpu()).double().mean() >= 0.999
    nbytes = got.numel()
    record(benchmark, device=device, dtype=p.dtype, shape=tuple(got.shape), provider=provider, nbytes=nbytes)
    setup = (
        "from benchmarks.test_bench_crop import make_inputs, pseudo_fn\n"
        f"inputs = make_inputs('lowres', 'cpu')\nfn = pseudo_fn({provider!r})"
    )
    time_provider(benchmark, device, fn, (p, boxes), 3 if provider == "reference" else 5, setup)


# ---- crop_pseudo_labels with align_corners=True (the LSE authors' resampling)


def _pseudo_reference_corners(p, boxes, thr):
    return reference.crop_pseudo_labels(p, boxes, OUT, thr, image_size=IMAGE, align_corners=True)


def _pseudo_fused_corners(p, boxes, thr):
    return ops.crop_pseudo_labels(p, boxes, OUT, thr, image_size=IMAGE, align_corners=True)


@pytest.mark.parametrize("provider", ["fused", "reference"])
def test_crop_pseudo_labels_align_corners(benchmark, device, provider):
    p, boxes = make_inputs("lowres", device)
    thr = torch.full((19,), 0.5, device=device)
    fn = _pseudo_fused_corners if provider == "fused" else _pseudo_reference_corners
    got, want = fn(p, boxes, thr), _pseudo_reference_corners(p, boxes, thr)
    assert (got.cpu() == want.cpu()).double().mean() >= 0.999
    record(benchmark, device=device, dtype=p.dtype, shape=tuple(got.shape), provider=provider, nbytes=got.numel())

    def run():
        fn(p, boxes, thr)
        sync(device)

    benchmark.pedantic(run, rounds=3 if provider == "reference" else 5, iterations=1, warmup_rounds=1)
    finish(benchmark, device, got.numel())
