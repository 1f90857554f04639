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


_roof = {}


def copy_roof(device):
    """The device's copy bandwidth, measured once per run: (GB/s written,
    GB/s read + written) by `clone` of a 256 MiB float32 tensor into a fresh
    buffer (first touch included, as the ops' fresh outputs). Median of 7."""
    if device not in _roof:
        import time

        src = torch.rand(64 * 2**20, device=device)
        times = []
        for _ in range(7):
            sync(device)
            t0 = time.perf_counter()
            y = src.clone()
            sync(device)
            times.append(time.perf_counter() - t0)
            del y
        times.sort()
        written = src.numel() * 4 / times[len(times) // 2] / 1e9
        _roof[device] = (written, 2 * written)
    return _roof[device]


def finish(benchmark, device, nbytes):
    """GB/s of the op's compulsory traffic and, beside it, that as a share of
    the device's copy bandwidth (read + write) measured in the same run."""
    stats = benchmark.stats.stats
    benchmark.extra_info["GB/s"] = round(nbytes / stats.median / 1e9, 2)
    _, roof_rw = copy_roof(device)
    benchmark.extra_info["copy_roof_GB/s_rw"] = round(roof_rw, 2)
    benchmark.extra_info["share_of_copy_roof_rw"] = round(nbytes / stats.median / 1e9 / roof_rw, 3)
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
