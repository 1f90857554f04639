"""lse_fast: fused C++/CUDA ops for LSE self-training domain adaptation.

`lse_fast.ops` holds the fused ops, `lse_fast.reference` their pure-PyTorch
references. Importing the package loads the compiled extension; without one
it fails with a message saying how to build it.
"""

from lse_fast._extension import built_with_cuda, load_extension

load_extension()

from lse_fast import ops, patches, reference  # noqa: E402  (needs the extension loaded)
from lse_fast.ops import FocalCELoss, Scores, crop_pseudo_labels, crop_resize, focal_ce_loss, score  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "FocalCELoss",
    "Scores",
    "built_with_cuda",
    "crop_pseudo_labels",
    "crop_resize",
    "focal_ce_loss",
    "ops",
    "patches",
    "reference",
    "score",
]
