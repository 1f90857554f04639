"""The fused ops of lse_fast.

Each op is declared and checked once in C++ (`torch.ops.lse_fast.*`, with
a Meta kernel for torch.compile); its module here holds the public
wrapper, which only converts arguments, and the autograd registration.
"""

from lse_fast._extension import cpu_isa
from lse_fast.ops.crop_pseudo_labels import crop_pseudo_labels
from lse_fast.ops.crop_resize import crop_resize
from lse_fast.ops.focal_ce_loss import FocalCELoss, focal_ce_loss
from lse_fast.ops.score import Scores, score, score_probs

__all__ = ["FocalCELoss", "Scores", "cpu_isa", "crop_pseudo_labels", "crop_resize", "focal_ce_loss", "score", "score_probs"]
