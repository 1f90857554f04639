"""Build of lse_fast's compiled extension, `lse_fast._C`.

CPU kernels are always built. CUDA kernels are built when the installed torch
has CUDA and nvcc is found, or when FORCE_CUDA=1; FORCE_CUDA=0 forces a
CPU-only build. The decision never depends on a GPU being present: the
architectures come from TORCH_CUDA_ARCH_LIST (default "8.0;9.0+PTX": A100, H100/H200,
and PTX that newer GPUs compile at load time).

Build against the torch you already have (an isolated build would download
a multi-GB CUDA torch into its build environment, so torch is deliberately not
a build requirement; an isolated build stops with a message saying this):

    pip install torch==2.13.0            # CPU machines; keep your own CUDA torch
    pip install --no-build-isolation -e .     # editable (development)
    pip install --no-build-isolation .        # non-editable
    pip wheel --no-build-isolation --no-deps -w dist .   # a wheel

Build artefacts (object files, egg-info) go to a per-checkout directory under
the system temp directory (LSE_FAST_BUILD_DIR overrides it), never into the
source tree; rebuilds there recompile only what changed. The wheel records
the torch it was built against in lse_fast/_build_info.py (generated,
git-ignored), and `import lse_fast` refuses another torch.
"""

import glob
import hashlib
import os
import re
import shutil
import sys
import tempfile

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"
VERSION = "0.1.0"
BUILD_INFO = os.path.join("lse_fast", "_build_info.py")

NO_TORCH_MESSAGE = """\
lse_fast setup: cannot import torch in the build environment ({error}).
lse_fast's extension must be compiled against the torch you run it with, so
torch is not a build requirement (an isolated build would download a
multi-GB torch that may not match yours). Install torch first, then build
without build isolation:
    pip install torch==2.13.0                        (CPU machines; keep an installed CUDA torch)
    pip install --no-build-isolation .               (or -e . for a development install)
    pip wheel --no-build-isolation --no-deps -w dist .   (a wheel)
See docs/install.md."""


def import_torch_or_exit():
    """The torch module, or SystemExit with NO_TORCH_MESSAGE (no traceback)."""
    try:
        import torch
        import torch.utils.cpp_extension  # noqa: F401
    except ImportError as exc:
        raise SystemExit(NO_TORCH_MESSAGE.format(error=exc)) from None
    return torch


def default_build_dir(torch_version):
    """Per-checkout, per-Python, per-torch build directory outside the tree."""
    key = hashlib.sha1(ROOT.encode()).hexdigest()[:10]
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch_version.replace('+', '_')}"
    return os.path.join(tempfile.gettempdir(), "lse_fast-build", f"{key}-{tag}")


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


def cuda_archs(with_cuda, env):
    return env.get("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS) if with_cuda else ""


def build_info_text(torch_version, torch_cuda, with_cuda, archs):
    """Source of lse_fast/_build_info.py: what this build was compiled against."""
    return (
        '"""Written by setup.py at build time (git-ignored): what lse_fast._C was built against."""\n\n'
        f"VERSION = {VERSION!r}\n"
        f"TORCH_VERSION = {torch_version!r}\n"
        f"TORCH_CUDA = {torch_cuda!r}\n"
        f"WITH_CUDA = {bool(with_cuda)!r}\n"
        f"CUDA_ARCHS = {archs!r}\n"
    )


def write_build_info(torch, with_cuda):
    text = build_info_text(torch.__version__, torch.version.cuda, with_cuda, cuda_archs(with_cuda, os.environ))
    path = os.path.join(ROOT, BUILD_INFO)
    old = open(path).read() if os.path.exists(path) else None
    if old != text:
        with open(path, "w") as f:
            f.write(text)


def extension_modules(torch):
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

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
    write_build_info(torch, with_cuda)
    return [ext]


def torch_requirement(torch_version):
    """`torch==X.Y.Z` for the torch being built against: a C++ extension must
    run with the torch it was compiled against. The local tag (+cpu, +cu130)
    is dropped, so any build of that release satisfies it."""
    m = re.match(r"\d+\.\d+\.\d+", torch_version)
    return f"torch=={m.group(0)}" if m else "torch"


# Optional dependencies by use (docs/install.md, "Extras"); the core (the ops,
# lse_fast.models, lse_fast.metrics, lse_fast.selection) needs torch and numpy.
EXTRAS = {
    "data": ["pillow>=10"],
    "dali": ["pillow>=10", "nvidia-dali-cuda130>=2.4,<3"],
    "driver": ["pillow>=10", "PyYAML>=6.0,<7", "tqdm>=4.60,<5", "matplotlib>=3.7,<4"],
    "dev": ["pytest>=8", "pytest-benchmark>=5", "hypothesis>=6"],
}
EXTRAS["all"] = sorted({r for name in ("dali", "driver", "dev") for r in EXTRAS[name]})


if __name__ == "__main__":
    torch = import_torch_or_exit()
    from torch.utils.cpp_extension import BuildExtension

    build_dir = os.environ.get("LSE_FAST_BUILD_DIR") or default_build_dir(torch.__version__)
    os.makedirs(build_dir, exist_ok=True)
    setup(
        name="lse_fast",
        version=VERSION,
        description="Fused C++/CUDA ops for LSE self-training domain adaptation in semantic segmentation",
        packages=find_packages(include=["lse_fast", "lse_fast.*"]),
        # the built-in benchmark's source model and its manifest (docs/driver.md, "The shipped source model")
        package_data={"lse_fast.assets": ["*.pt", "*.json"]},
        python_requires=">=3.10",
        install_requires=[torch_requirement(torch.__version__), "numpy>=1.24"],
        extras_require=EXTRAS,
        ext_modules=extension_modules(torch),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        # Non-editable builds (install, wheel, build_ext) keep their objects
        # here and recompile only what changed; an editable install compiles
        # in a fresh temp dir of setuptools' own.
        options={"build": {"build_base": build_dir}, "egg_info": {"egg_base": build_dir}},
        zip_safe=False,
    )
