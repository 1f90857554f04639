"""Shared benchmark fixtures: the device under test, a record of the
machine in every result, the --run-e2e option, and the summary table printed
at the end of the run (docs/performance.md).

    pytest benchmarks/ --benchmark-only              the op benchmarks
    pytest benchmarks/ --benchmark-only --run-e2e    also the driver, torchrun and data benchmarks

Every benchmark that calls `record(...)` and `finish(...)` gets a row in the
table: keyed by op (test name without "test_"), device, shape, dtype and any
other parameter of the test (e.g. a new `@pytest.mark.parametrize
("align_corners", [False, True])` adds rows "align_corners=True"), with one
column per provider (fused / eager / compile; see benchmarks/summarize.py).
"""

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


# ---- end-to-end benchmarks behind --run-e2e

def pytest_addoption(parser):
    parser.addoption("--run-e2e", action="store_true", default=False,
                     help="also run the end-to-end benchmarks (marker e2e: driver rounds, torchrun, data loaders; "
                          "tens of minutes on a 2-core CPU)")


_DEFAULT_COLUMNS = ["min", "max", "mean", "stddev", "median", "iqr", "outliers", "ops", "rounds", "iterations"]


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end-to-end benchmark, run only with --run-e2e")
    # pytest-benchmark's own table, narrowed from ~260 columns unless
    # --benchmark-columns is given (our summary table follows it).
    if getattr(config.option, "benchmark_columns", None) == _DEFAULT_COLUMNS:
        config.option.benchmark_columns = ["median", "iqr", "rounds"]
        session = getattr(config, "_benchmarksession", None)
        if session is not None:
            session.columns = config.option.benchmark_columns


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-e2e"):
        return
    skip = pytest.mark.skip(reason="end-to-end benchmark: run with --run-e2e")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


# ---- the summary table

# Parameters that are columns or row keys of the table, not variants.
_KEY_PARAMS = {"provider", "device", "shape", "dtype"}
_results = []


@pytest.fixture(autouse=True)
def _collect_for_summary(request):
    """After each op benchmark: its variant (parameters other than provider,
    device, shape, dtype) into extra_info, and its result for the table."""
    yield
    bench = request.node.funcargs.get("benchmark")
    if bench is None or getattr(bench, "stats", None) is None or "provider" not in bench.extra_info:
        return
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    variant = ",".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in _KEY_PARAMS)
    bench.extra_info.setdefault("variant", variant)
    _results.append({"name": request.node.name, "stats": {"median": bench.stats.stats.median},
                     "extra_info": bench.extra_info})


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's table: the last thing printed
def pytest_terminal_summary(terminalreporter, config):
    if not _results:
        return
    from benchmarks.summarize import format_tables

    terminalreporter.write_sep("=", "lse_fast benchmark summary (median times; docs/performance.md)")
    terminalreporter.write_line(f"machine: {describe('cpu')}, torch {torch.__version__}")
    for line in format_tables(_results):
        terminalreporter.write_line(line)


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
