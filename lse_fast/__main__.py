"""``python -m lse_fast --version``: what this lse_fast is and was built against."""

import argparse
import sys

import torch

import lse_fast
from lse_fast._extension import build_info, cpu_isa


def version_text() -> str:
    info = build_info()
    if lse_fast.built_with_cuda():
        archs = getattr(info, "CUDA_ARCHS", None) or "unknown (built without setup.py)"
        build = f"CPU + CUDA {getattr(info, 'TORCH_CUDA', None) or torch.version.cuda} (TORCH_CUDA_ARCH_LIST={archs})"
    else:
        build = "CPU only"
    built_with = f"torch {info.TORCH_VERSION}" if info is not None else "unknown (no lse_fast/_build_info.py: not built by setup.py)"
    running = f"torch {torch.__version__}" + (f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (no CUDA)")
    return "\n".join([
        f"lse_fast {lse_fast.__version__}",
        f"build: {build}",
        f"built with: {built_with}",
        f"running: {running}",
        f"CPU ISA path: {cpu_isa()}",
        f"location: {lse_fast.__file__}",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lse_fast", description="lse_fast package information.")
    parser.add_argument("--version", action="store_true", help="print the version, build (CPU/CUDA, archs), "
                        "the torch it was built with and the one running, and the CPU ISA path")
    args = parser.parse_args(argv)
    if not args.version:
        parser.print_help()
        return 0
    print(version_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
