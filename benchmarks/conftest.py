"""Shared benchmark fixtures: the device under test and a record of the
machine in every result."""

import platform

import pytest
import torch

import lse_fast


def devices():
    out = ["cpu"]
    if torch.cuda.is_available() and lse_fast.built_with_cuda():
        out.append("cuda")
    return out


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def describe(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


@pytest.fixture(params=devices())
def device(request):
    return request.param


def record(benchmark, *, device, dtype, shape, provider, nbytes):
    """Adds what a reader needs to compare runs to the benchmark's JSON."""
    benchmark.extra_info.update(
        device=describe(device),
        dtype=str(dtype).replace("torch.", ""),
        shape="x".join(map(str, shape)),
        provider=provider,
        torch=torch.__version__,
        bytes=nbytes,
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def finish(benchmark, device, nbytes):
    stats = benchmark.stats.stats
    benchmark.extra_info["GB/s"] = round(nbytes / stats.median / 1e9, 2)
    if device == "cuda":
        benchmark.extra_info["peak_MiB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


_compiled = {}


def provider_fn(provider, fused, reference):
    """The callable timed for `provider`: the fused op, its eager reference,
    or torch.compile of the reference (compiled once per reference)."""
    if provider == "fused":
        return fused
    if provider == "eager":
        return reference
    if reference not in _compiled:
        _compiled[reference] = torch.compile(reference)
    return _compiled[reference]
