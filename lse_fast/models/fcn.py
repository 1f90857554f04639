"""FCN-8s with a VGG16 backbone, the classic formulation (Long et al.,
CVPR 2015): conv1_1 pads the input by 100 pixels so that any input size
survives the five poolings and the 7x7 ``fc6``; the stride-32 scores are
upsampled by learned transposed convolutions (initialised bilinear), fused
with the pool4 and pool3 scores (cropped at offsets 5 and 9) and the
stride-8 result is upsampled by 8 and cropped at offset 31 back to the
input size. Logits come out at the input resolution (``output_stride == 1``)
for every input size.

Parameter names follow the widely used PyTorch port of the original
(``conv1_1`` .. ``conv5_3``, ``fc6``, ``fc7``, ``score_fr``,
``score_pool3``, ``score_pool4``, ``upscore2``, ``upscore_pool4``,
``upscore8``), so its checkpoints load as they are; torchvision's VGG16
ImageNet weights (``features.N``, ``classifier.N``) are converted on load
(the fully connected layers reshaped into ``fc6``/``fc7``).

Skip scaling: caffe's FCN-8s "at-once" (and the FCN-8s checkpoints of the UDA
projects built on it, e.g. BDL and LSE) feeds ``pool4 * 0.01`` and
``pool3 * 0.0001`` to the skip score layers. ``skip_scale`` chooses: "none",
"atonce", or None (auto: "none" for a new model and for lse_fast's own
checkpoints, which record the scales in the buffer ``skip_scales``;
"atonce", with a warning, when a checkpoint with trained score layers but
without that record is loaded).
"""

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from lse_fast.models.registry import register
from lse_fast.models._record import LayoutRecord

_VGG16 = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
# torchvision vgg16 `features` indices of the 13 convolutions, in order.
_TV_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
SKIP_SCALES = {"none": (1.0, 1.0), "atonce": (0.01, 0.0001)}  # (pool4, pool3)
_FAMILY_NOTE = (
    "FCN-8s checkpoint with trained score layers and no lse_fast `skip_scales` record: taken as caffe FCN-8s "
    "'at-once' family (BDL/LSE), whose skips see pool4 * 0.01 and pool3 * 0.0001"
)


def _bilinear_kernel(channels, size):
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = filt
    return weight


class FCN8s(LayoutRecord):
    """FCN-8s (VGG16), classic 100-pixel padding and cropping; logits at input size.

    Args:
        num_classes: classes of the score layers.
        input_normalization: ``"caffe"`` (default: the original caffe VGG16
            weights and the FCN checkpoints derived from them) or
            ``"imagenet"`` (torchvision's VGG16 weights).
        dropout: probability of the dropout after fc6 and fc7 (0.5 as the original).
        skip_scale: "none", "atonce" (pool4 * 0.01, pool3 * 0.0001) or None
            (auto, see the module docstring).
    """

    RECORD = "skip_scales"

    output_stride = 1
    record_buffers = ("skip_scales",)
    head_prefixes = ("score_fr.", "score_pool3.", "score_pool4.", "upscore2.", "upscore_pool4.", "upscore8.")

    def __init__(self, num_classes=19, *, input_normalization="caffe", dropout=0.5, skip_scale=None):
        super().__init__()
        if skip_scale is not None and skip_scale not in SKIP_SCALES:
            raise ValueError(f"lse_fast.models.FCN8s: `skip_scale` must be None (auto), 'none' or 'atonce', "
                             f"got {skip_scale!r}")
        self.skip_scale = skip_scale
        self.register_buffer("skip_scales", torch.tensor(SKIP_SCALES[skip_scale or "none"]), persistent=True)
        self._scales = SKIP_SCALES[skip_scale or "none"]
        if input_normalization not in ("caffe", "imagenet"):
            raise ValueError(
                f"lse_fast.models.FCN8s: `input_normalization` must be 'caffe' or 'imagenet', got {input_normalization!r}"
            )
        self.num_classes = num_classes
        self.input_normalization = input_normalization
        in_ch = 3
        self._conv_names = []
        for stage, (ch, n) in enumerate(_VGG16, start=1):
            for i in range(1, n + 1):
                name = f"conv{stage}_{i}"
                pad = 100 if name == "conv1_1" else 1
                setattr(self, name, nn.Conv2d(in_ch, ch, 3, padding=pad))
                self._conv_names.append(name)
                in_ch = ch
        self.fc6 = nn.Conv2d(512, 4096, 7)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.drop = nn.Dropout2d(dropout)
        self.score_fr = nn.Conv2d(4096, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for m in (self.score_fr, self.score_pool3, self.score_pool4):
            nn.init.zeros_(m.weight)  # as the original: scores start at 0, the backbone carries the signal
        with torch.no_grad():
            for m in (self.upscore2, self.upscore_pool4, self.upscore8):
                m.weight.copy_(_bilinear_kernel(num_classes, m.kernel_size[0]))

    def _stage(self, x, stage):
        for i in range(1, _VGG16[stage - 1][1] + 1):
            x = F.relu(getattr(self, f"conv{stage}_{i}")(x))
        return F.max_pool2d(x, 2, stride=2, ceil_mode=True)

    def set_skip_scales(self, pool4, pool3):
        self._scales = (float(pool4), float(pool3))
        with torch.no_grad():
            self.skip_scales.copy_(torch.tensor(self._scales))

    def checkpoint_loaded(self):
        """Called by ``load_checkpoint`` after copying tensors."""
        self.set_skip_scales(*self.skip_scales.tolist())

    def apply_record(self, value):
        self.set_skip_scales(*value.tolist())

    def forward(self, x):
        h, w = x.shape[-2:]
        p = self._stage(self._stage(x, 1), 2)
        pool3 = self._stage(p, 3)
        pool4 = self._stage(pool3, 4)
        s4_in = pool4 if self._scales[0] == 1.0 else pool4 * self._scales[0]
        s3_in = pool3 if self._scales[1] == 1.0 else pool3 * self._scales[1]
        p = self._stage(pool4, 5)
        p = self.drop(F.relu(self.fc6(p)))
        p = self.drop(F.relu(self.fc7(p)))
        up2 = self.upscore2(self.score_fr(p))
        s4 = self.score_pool4(s4_in)[:, :, 5 : 5 + up2.shape[2], 5 : 5 + up2.shape[3]]
        up4 = self.upscore_pool4(up2 + s4)
        s3 = self.score_pool3(s3_in)[:, :, 9 : 9 + up4.shape[2], 9 : 9 + up4.shape[3]]
        out = self.upscore8(up4 + s3)
        return out[:, :, 31 : 31 + h, 31 : 31 + w].contiguous()

    def convert_state_dict(self, state):
        """Maps torchvision's VGG16 layout (``features.N`` / ``classifier.N``)
        to conv*_*/fc6/fc7, and sets the skip scales of a community checkpoint
        (see the module docstring)."""
        if not any(k.startswith("features.") for k in state):
            return self._skip_scales_of(state)
        return self._convert_torchvision(state)

    def _skip_scales_of(self, state):
        w = state.get("score_pool3.weight")
        trained_head = w is not None and tuple(w.shape) == tuple(self.score_pool3.weight.shape)
        if "skip_scales" in state:
            if self.skip_scale is None or tuple(state["skip_scales"].tolist()) == SKIP_SCALES[self.skip_scale]:
                return state, []
            note = (f"the checkpoint records skip scales {tuple(state['skip_scales'].tolist())}; this model keeps "
                    f"skip_scale={self.skip_scale!r} {SKIP_SCALES[self.skip_scale]} as built")
        elif trained_head:
            chosen = self.skip_scale or "atonce"
            how = "auto" if self.skip_scale is None else f"skip_scale={self.skip_scale!r}"
            note = f"{_FAMILY_NOTE}; this model uses {chosen!r} {SKIP_SCALES[chosen]} ({how}" + (
                "; pass skip_scale='none' for unscaled skips)" if chosen == "atonce" else
                "; its forward differs from the one the checkpoint was trained with)")
        else:
            return state, []
        warnings.warn(f"lse_fast.models: {note}", RuntimeWarning, stacklevel=4)
        state = dict(state)
        state["skip_scales"] = torch.tensor(SKIP_SCALES[self.skip_scale or "atonce"])
        return state, [note]

    def _convert_torchvision(self, state):
        converted = {}
        conv_of = {idx: name for idx, name in zip(_TV_CONV_INDICES, self._conv_names)}
        for k, v in state.items():
            parts = k.split(".")
            if parts[0] == "features" and len(parts) == 3 and int(parts[1]) in conv_of:
                converted[f"{conv_of[int(parts[1])]}.{parts[2]}"] = v
            elif k == "classifier.0.weight" and v.dim() == 2 and v.shape[1] == 512 * 7 * 7:
                converted["fc6.weight"] = v.reshape(v.shape[0], 512, 7, 7)
            elif k == "classifier.0.bias":
                converted["fc6.bias"] = v
            elif k == "classifier.3.weight" and v.dim() == 2:
                converted["fc7.weight"] = v.reshape(v.shape[0], v.shape[1], 1, 1)
            elif k == "classifier.3.bias":
                converted["fc7.bias"] = v
            else:
                converted[k] = v
        note = (
            "torchvision VGG16 layout converted (features.N -> convX_Y, classifier.0/3 -> fc6/fc7); "
            "these weights expect input_normalization='imagenet'"
        )
        if self.input_normalization != "imagenet":
            note += f" but this model has {self.input_normalization!r}: build it with input_normalization='imagenet'"
        return converted, [note]


@register("fcn8s_vgg16")
def fcn8s_vgg16(num_classes=19, *, input_normalization="caffe", dropout=0.5, skip_scale=None):
    """FCN-8s VGG16 (classic, logits at input resolution)."""
    return FCN8s(num_classes, input_normalization=input_normalization, dropout=dropout, skip_scale=skip_scale)
