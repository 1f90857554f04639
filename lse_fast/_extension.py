"""Loading of the compiled extension and the checks every op wrapper shares."""

import importlib

BUILD_HINT = (
    "Build it from the repository root with\n"
    "    pip install torch==2.13.0   (CPU machines; keep an installed CUDA torch)\n"
    "    pip install --no-build-isolation -e .\n"
    "(README.md, 'Set-up', has the details)."
)


def load_extension():
    """Imports lse_fast._C, which registers the torch.ops.lse_fast ops."""
    try:
        import torch  # noqa: F401  (the extension links against it)
    except ImportError as exc:
        raise ImportError(f"lse_fast needs PyTorch, which failed to import ({exc}).\n{BUILD_HINT}") from exc
    try:
        importlib.import_module("lse_fast._C")
    except ImportError as exc:
        raise ImportError(
            "lse_fast's compiled extension (lse_fast._C) is not built or does not match the "
            f"installed torch ({exc}).\n{BUILD_HINT}"
        ) from exc


def built_with_cuda() -> bool:
    """True when the extension was built with its CUDA kernels."""
    import torch

    return bool(torch.ops.lse_fast.built_with_cuda())


def cpu_isa() -> str:
    """The CPU code path the kernels run: ``"avx2"`` (AVX2+FMA) or
    ``"portable"`` (baseline ISA). Chosen once per process from the CPU and
    the environment variable ``LSE_FAST_CPU_ISA`` (unset/``auto``,
    ``portable``, ``avx2``); an invalid value raises a RuntimeError naming it."""
    import torch

    return str(torch.ops.lse_fast.cpu_isa())


def require_kernels_for(op: str, tensor) -> None:
    """Raises a plain error when a CPU-only build is given a CUDA tensor."""
    if tensor.device.type == "cuda" and not built_with_cuda():
        raise RuntimeError(
            f"lse_fast.{op}: got a CUDA tensor, but this lse_fast build has CPU kernels only "
            "(it was built against a torch without CUDA, or without nvcc). Rebuild against a "
            "CUDA-enabled torch with nvcc on PATH (or FORCE_CUDA=1), or pass a CPU tensor."
        )
