"""Build of lse_fast's compiled extension, `lse_fast._C`.

CPU kernels are always built. CUDA kernels are built when the installed torch
has CUDA and nvcc is found, or when FORCE_CUDA=1; FORCE_CUDA=0 forces a
CPU-only build. The decision never depends on a GPU being present: the
architectures come from TORCH_CUDA_ARCH_LIST (default "8.0;9.0+PTX": A100, H100/H200,
and PTX that newer GPUs compile at load time).

Build against the torch you already have (an isolated build would download
a multi-GB CUDA torch into its build environment):

    pip install torch==2.13.0            # CPU machines; keep your own CUDA torch
    pip install --no-build-isolation -e .
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def find_nvcc(env):
    """Path of nvcc from CUDA_HOME / CUDA_PATH or PATH, or None."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = env.get(var)
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc", path=env.get("PATH"))


def decide_cuda(env, torch_cuda_version, nvcc):
    """Returns (build_cuda, reason). Never looks for a GPU."""
    force = env.get("FORCE_CUDA", "").strip()
    if force not in ("", "0", "1"):
        raise SystemExit(f"lse_fast setup: FORCE_CUDA must be 0 or 1, got {force!r}")
    if force == "0":
        return False, "FORCE_CUDA=0"
    if force == "1":
        return True, "FORCE_CUDA=1"
    if torch_cuda_version is None:
        return False, "the installed torch has no CUDA (torch.version.cuda is None)"
    if nvcc is None:
        return False, "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    return True, f"torch has CUDA {torch_cuda_version} and nvcc is at {nvcc}"


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def extension_modules():
    try:
        import torch
        from torch.utils.cpp_extension import CppExtension, CUDAExtension
    except ImportError as exc:
        raise SystemExit(
            "lse_fast setup: torch must be installed before building, and the build must see it:\n"
            "    pip install torch==2.13.0   (CPU machines; keep an installed CUDA torch)\n"
            "    pip install --no-build-isolation -e .\n"
            f"(import failed: {exc})"
        )

    with_cuda, reason = decide_cuda(os.environ, torch.version.cuda, find_nvcc(os.environ))
    cpp = sources("csrc/torch/*.cpp") + sources("csrc/cpu/*.cpp")
    cxx_flags = ["-O3", "-fno-trapping-math", "-fopenmp"]
    kwargs = dict(include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=["-fopenmp"])
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
        cu = sources("csrc/cuda/*.cu") + sources("csrc/torch/cuda/*.cpp")
        print(f"lse_fast setup: building CPU + CUDA kernels ({reason}); "
              f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}", file=sys.stderr)
        ext = CUDAExtension(
            "lse_fast._C", cpp + cu,
            extra_compile_args={"cxx": cxx_flags + ["-DLSE_WITH_CUDA"], "nvcc": ["-O3", "-DLSE_WITH_CUDA"]},
            **kwargs,
        )
    else:
        print(f"lse_fast setup: building CPU kernels only ({reason})", file=sys.stderr)
        ext = CppExtension("lse_fast._C", cpp, extra_compile_args={"cxx": cxx_flags}, **kwargs)
    print("lse_fast setup: sources: " + " ".join(ext.sources), file=sys.stderr)
    return [ext]


if __name__ == "__main__":
    from torch.utils.cpp_extension import BuildExtension

    setup(
        name="lse_fast",
        version="0.1.0",
        description="Fused C++/CUDA ops for LSE self-training domain adaptation in semantic segmentation",
        packages=find_packages(include=["lse_fast", "lse_fast.*"]),
        python_requires=">=3.10",
        install_requires=["torch"],
        ext_modules=extension_modules(),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        zip_safe=False,
    )
