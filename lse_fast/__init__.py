"""lse_fast: fused C++/CUDA ops for LSE self-training domain adaptation.

`lse_fast.ops` holds the fused ops, `lse_fast.reference` their pure-PyTorch
references. Importing the package loads the compiled extension; without one
it fails with a message saying how to build it.

The other public subpackages (`models`, `data`, `evaluate`, `metrics`,
`selection`, `stats`, `adapt`) are imported on first access (`lse_fast.models`), so
`import lse_fast` stays fast and never imports NVIDIA DALI or matplotlib.
"""

import importlib

from lse_fast._extension import built_with_cuda, load_extension
from lse_fast._extras import install_finder

install_finder()  # a missing optional dependency names its extra (lse_fast[driver], ...)
load_extension()

from lse_fast import ops, patches, reference  # noqa: E402  (needs the extension loaded)
from lse_fast.ops import FocalCELoss, Scores, crop_pseudo_labels, crop_resize, focal_ce_loss, score  # noqa: E402

__version__ = "0.1.0"

# Subpackages imported on first attribute access (PEP 562).
_LAZY_SUBMODULES = ("adapt", "data", "evaluate", "metrics", "models", "selection", "stats")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"lse_fast.{name}")  # also binds it as an attribute of the package
    raise AttributeError(f"module 'lse_fast' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))


__all__ = [
    "FocalCELoss",
    "Scores",
    "adapt",
    "built_with_cuda",
    "crop_pseudo_labels",
    "crop_resize",
    "data",
    "evaluate",
    "focal_ce_loss",
    "metrics",
    "models",
    "ops",
    "patches",
    "reference",
    "score",
    "selection",
    "stats",
]
