"""Fused scoring vs the eager reference vs torch.compile of the reference.

Throughput is GB/s of logits read (the op's compulsory traffic). Run with
    pytest benchmarks/ --benchmark-only
"""

import pytest
import torch

from benchmarks.conftest import finish, provider_fn, record, sync
from benchmarks.memory import peak_extra_mib
from lse_fast import ops, reference

SHAPES = {"paper": (2, 19, 512, 1024), "small": (1, 19, 64, 128)}


def select(provider):
    return provider_fn(provider, ops.score, reference.score)


@pytest.mark.parametrize("provider", ["fused", "eager", "compile"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", list(SHAPES), ids=str)
def test_score(benchmark, device, shape, dtype, provider):
    dims = SHAPES[shape]
    if dtype == torch.bfloat16 and shape == "small":
        pytest.skip("bf16 measured at paper shape only")
    logits = (torch.randn(dims, device=device) * 3).to(dtype)
    fn = select(provider)
    # Every provider must agree with the fused op before it is timed.
    got, fused = fn(logits), ops.score(logits)
    assert torch.equal(got.class_pixels, fused.class_pixels)
    nbytes = logits.numel() * logits.element_size()
    record(benchmark, device=device, dtype=dtype, shape=dims, provider=provider, nbytes=nbytes)

    def run():
        fn(logits)
        sync(device)

    benchmark.pedantic(run, rounds=10 if shape == "paper" else 50, iterations=1, warmup_rounds=2)
    finish(benchmark, device, nbytes)


# ---- score of the bilinear upsampling of stride-8 logits (ops.score(x, size))

UPSAMPLED = {"paper": ((2, 19, 64, 128), (512, 1024))}


def _interpolate_then_fused(logits, size):
    up = torch.nn.functional.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return ops.score(up)


def select_upsampled(provider):
    if provider == "fused":
        return ops.score
    if provider == "interpolate+fused":  # what the driver does today
        return _interpolate_then_fused
    return provider_fn(provider, None, reference.score)


@pytest.mark.parametrize("provider", ["fused", "interpolate+fused", "eager", "compile"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", list(UPSAMPLED), ids=str)
def test_score_upsampled(benchmark, device, shape, dtype, provider):
    dims, size = UPSAMPLED[shape]
    logits = (torch.randn(dims, device=device) * 3).to(dtype)
    fn = select_upsampled(provider)
    got, fused = fn(logits, size), ops.score(logits, size=size)
    # Every provider must agree with the fused op before it is timed (labels
    # may differ at float near-ties of the upsampled logits: a few per million).
    assert (got.label != fused.label).float().mean().item() < 1e-4
    n = dims[0]
    # Compulsory traffic: low-resolution logits read, per-pixel outputs
    # written (float32 confidence and entropy, int64 label).
    nbytes = logits.numel() * logits.element_size() + n * size[0] * size[1] * (4 + 4 + 8)
    record(benchmark, device=device, dtype=dtype, shape=(*dims, *size), provider=provider, nbytes=nbytes)

    def run():
        fn(logits, size)
        sync(device)

    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=2)
    finish(benchmark, device, nbytes)
    if device == "cpu":
        setup = (
            "from benchmarks.test_bench_score import select_upsampled\n"
            f"logits = (torch.randn({dims}) * 3).to(torch.{str(dtype).split('.')[-1]})\n"
            f"fn = select_upsampled({provider!r})"
        )
        peak = peak_extra_mib(setup, f"s = fn(logits, {size}); del s")
        benchmark.extra_info["peak_extra_MiB"] = round(peak, 1)


# ---- the upsampled score with align_corners=True (LSE authors, CRST, ESL)


def _interpolate_corners_then_fused(logits, size):
    up = torch.nn.functional.interpolate(logits.float(), size=size, mode="bilinear", align_corners=True)
    return ops.score(up)


@pytest.mark.parametrize("provider", ["fused", "interpolate+fused", "eager"])
@pytest.mark.parametrize("shape", list(UPSAMPLED), ids=str)
def test_score_upsampled_align_corners(benchmark, device, shape, provider):
    dims, size = UPSAMPLED[shape]
    logits = (torch.randn(dims, device=device) * 3).float()
    fn = {
        "fused": lambda x, s: ops.score(x, size=s, align_corners=True),
        "interpolate+fused": _interpolate_corners_then_fused,
        "eager": lambda x, s: reference.score(x, size=s, align_corners=True),
    }[provider]
    got, fused = fn(logits, size), ops.score(logits, size=size, align_corners=True)
    assert (got.label != fused.label).float().mean().item() < 1e-4
    nbytes = logits.numel() * logits.element_size() + dims[0] * size[0] * size[1] * (4 + 4 + 8)
    record(benchmark, device=device, dtype=logits.dtype, shape=(*dims, *size), provider=provider, nbytes=nbytes)

    def run():
        fn(logits, size)
        sync(device)

    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=2)
    finish(benchmark, device, nbytes)


# ---- score_probs: scores of softmax outputs, direct and upsampled (ESL's form)


@pytest.mark.parametrize("provider", ["fused", "eager", "compile"])
@pytest.mark.parametrize("form", ["direct", "upsampled"])
def test_score_probs(benchmark, device, form, provider):
    dims, size = UPSAMPLED["paper"]
    if form == "direct":
        dims, size = SHAPES["paper"], None
    probs = torch.softmax(torch.randn(dims, device=device) * 3, 1)
    kw = {} if size is None else {"size": size, "align_corners": True}
    fn = provider_fn(provider, ops.score_probs, reference.score_probs)
    got, fused = fn(probs, **kw), ops.score_probs(probs, **kw)
    assert (got.label != fused.label).float().mean().item() < 1e-4
    out = dims[0] * (dims[2] * dims[3] if size is None else size[0] * size[1])
    nbytes = probs.numel() * probs.element_size() + out * (4 + 4 + 8)
    record(benchmark, device=device, dtype=probs.dtype, shape=(*dims, *(size or ())), provider=provider, nbytes=nbytes)

    def run():
        fn(probs, **kw)
        sync(device)

    benchmark.pedantic(run, rounds=10 if form == "direct" else 5, iterations=1, warmup_rounds=2)
    finish(benchmark, device, nbytes)
