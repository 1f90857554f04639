"""Loading of the compiled extension and the checks every op wrapper shares."""

import importlib
import re

BUILD_HINT = (
    "Build it from the repository root with\n"
    "    pip install torch==2.13.0   (CPU machines; keep an installed CUDA torch)\n"
    "    pip install --no-build-isolation -e .\n"
    "(README.md, 'Set-up', has the details)."
)


def build_info():
    """What lse_fast._C was built against (lse_fast/_build_info.py, written by
    setup.py), or None for an extension built without it (e.g. by CMake)."""
    try:
        return importlib.import_module("lse_fast._build_info")
    except ImportError:
        return None


def _release(version):
    """'2.13.0+cpu' -> '2.13.0' (the public release, no local tag)."""
    m = re.match(r"\d+(\.\d+)*", str(version))
    return m.group(0) if m else str(version)


def torch_mismatch(built_torch, built_cuda, running_torch, running_cuda):
    """The one-line refusal when the running torch is not the one the
    extension was compiled against, else None. A C++ extension must run with
    the torch release it was built with; a CUDA build also needs that CUDA
    (a CPU-only build runs under a CUDA torch of the same release)."""
    if _release(built_torch) != _release(running_torch) or (built_cuda is not None and built_cuda != running_cuda):
        built = f"torch {built_torch}" + (f" (CUDA {built_cuda})" if built_cuda else "")
        running = f"torch {running_torch}" + (f" (CUDA {running_cuda})" if running_cuda else " (no CUDA)")
        return (f"lse_fast was built against {built} but {running} is installed: install torch=={_release(built_torch)}, "
                "or rebuild lse_fast against this torch (pip install --no-build-isolation --force-reinstall "
                "--no-deps <lse_fast source>; docs/install.md)")
    return None


def load_extension():
    """Imports lse_fast._C, which registers the torch.ops.lse_fast ops, after
    checking that the running torch is the one it was built against."""
    try:
        import torch  # noqa: F401  (the extension links against it)
    except ImportError as exc:
        raise ImportError(f"lse_fast needs PyTorch, which failed to import ({exc}).\n{BUILD_HINT}") from exc
    info = build_info()
    if info is not None:
        message = torch_mismatch(info.TORCH_VERSION, info.TORCH_CUDA, torch.__version__, torch.version.cuda)
        if message is not None:
            raise ImportError(message) from None
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
