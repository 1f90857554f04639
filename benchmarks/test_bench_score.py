"""Fused scoring vs the eager reference vs torch.compile of the reference.

Throughput is GB/s of logits read (the op's compulsory traffic). Run with
    pytest benchmarks/ --benchmark-only
"""

import pytest
import torch

from benchmarks.conftest import finish, provider_fn, record, sync
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
