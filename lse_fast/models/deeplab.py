"""DeepLab-v2 with a ResNet-101 backbone, in the layout of the checkpoints the
UDA community shares (AdaptSegNet / ADVENT and the many projects built on
them): ``conv1``, ``bn1``, ``layer1``..``layer4`` of caffe-style bottlenecks
(the stride sits on the first 1x1 convolution), layer3 and layer4 dilated by
2 and 4 instead of strided (output stride 8), and the ASPP classifier
``layer5.conv2d_list.{0..3}``: four 3x3 convolutions 2048 -> C with bias and
dilations 6, 12, 18, 24 whose outputs are summed.

The summation covers all four branches by default. A ``return`` inside the
summation loop of the head that many projects copied keeps only the first
two, and the checkpoints of that family (AdaptSegNet, ADVENT, BDL, LSE, ...)
were trained that way: their branches 3 and 4 are untrained. ``aspp_branches``
chooses the layout: 4 (all summed), 2 (the early-return layout) or None
(auto: 4 for a new model and for lse_fast's own checkpoints, which record
the layout in the buffer ``layer5.branches``; 2, with a warning, when a
checkpoint with a DeepLab-v2 head but without that record is loaded, i.e. a
community checkpoint).

BatchNorm is frozen as in those projects: its affine parameters never
require a gradient and its layers stay in eval mode (running statistics) even
after ``model.train()``; pass ``freeze_bn=False`` to train them.
"""

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from lse_fast.models.registry import register
from lse_fast.models._record import LayoutRecord

_AUX_NOTE = (
    "multi-level checkpoint (AdaptSegNet deeplab_multi / ADVENT): its final head `layer6` was loaded as "
    "`layer5`; its auxiliary layer3 head (`layer5`, 1024 input channels) is not part of this model and is "
    "listed as unexpected under the prefix `aux_layer5.`"
)


_FAMILY_NOTE = (
    "DeepLab-v2 checkpoint of the AdaptSegNet/ADVENT family (a trained head without lse_fast's `layer5.branches` "
    "record): those were trained with the early-return ASPP that sums only the first two branches"
)


def init_weights(model, head, *, freeze_bn=False):
    """He-normal convolutions and unit BatchNorm layers everywhere but the
    ASPP `head` (initialised by :class:`ASPPSum` itself); with `freeze_bn`
    the BatchNorm affine parameters are not trained."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not any(m is c for c in head.conv2d_list):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            if freeze_bn:
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)


class ASPPSum(LayoutRecord):
    """DeepLab-v2 ASPP classifier: parallel 3x3 convolutions with the given
    dilations (padding = dilation), the outputs of the first ``branches``
    summed (all of them unless the early-return layout is chosen). The count
    is kept in the buffer ``branches`` so checkpoints record it."""

    RECORD = "branches"

    def __init__(self, in_channels, num_classes, dilations=(6, 12, 18, 24), branches=None):
        super().__init__()
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=d, dilation=d, bias=True) for d in dilations
        )
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)
        self.register_buffer("branches", torch.tensor(len(dilations)), persistent=True)
        self._summed = len(dilations)
        if branches is not None:
            self.set_branches(branches)

    def set_branches(self, n):
        n = int(n)
        if not 1 <= n <= len(self.conv2d_list):
            raise ValueError(f"lse_fast.models.DeepLabV2: `aspp_branches` must be in [1, {len(self.conv2d_list)}] "
                             f"(4: all summed, 2: the early-return layout), got {n}")
        self._summed = n
        with torch.no_grad():
            self.branches.fill_(n)

    @property
    def summed(self) -> int:
        return self._summed

    def apply_record(self, value):
        self.set_branches(int(value))

    def forward(self, x):
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1:self._summed]:
            out = out + conv(x)
        return out


class Bottleneck(nn.Module):
    """Caffe-style ResNet bottleneck: stride on conv1 (1x1), dilation on conv2 (3x3)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class DeepLabV2(nn.Module):
    """DeepLab-v2: dilated ResNet (output stride 8) + summed ASPP.

    Args:
        num_classes: classes of the head.
        layers: bottlenecks per stage ((3, 4, 23, 3) = ResNet-101).
        freeze_bn: keep BatchNorm in eval mode with frozen affine parameters.
        input_normalization: what the weights expect; community DeepLab-v2
            checkpoints expect ``"caffe"`` (BGR, 0..255 minus the mean).
        aspp_branches: ASPP branches summed: 4, 2 (the early-return layout
            of the AdaptSegNet/ADVENT family) or None (auto, see the module
            docstring).
    """

    output_stride = 8
    record_buffers = ("layer5.branches",)
    head_prefixes = ("layer5.",)  # the classifier: 10x learning rate in the source recipe

    def __init__(self, num_classes=19, layers=(3, 4, 23, 3), *, freeze_bn=True, input_normalization="caffe",
                 aspp_branches=None):
        super().__init__()
        if aspp_branches not in (None, 2, 4):
            raise ValueError(f"lse_fast.models.DeepLabV2: `aspp_branches` must be None (auto), 4 (all summed) or 2 "
                             f"(the early-return layout), got {aspp_branches!r}")
        self.aspp_branches = aspp_branches
        if input_normalization not in ("caffe", "imagenet"):
            raise ValueError(
                f"lse_fast.models.DeepLabV2: `input_normalization` must be 'caffe' or 'imagenet', got {input_normalization!r}"
            )
        self.num_classes = num_classes
        self.input_normalization = input_normalization
        self.freeze_bn = freeze_bn
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self._inplanes = 64
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], dilation=2)
        self.layer4 = self._make_layer(512, layers[3], dilation=4)
        self.layer5 = ASPPSum(2048, num_classes, branches=aspp_branches)
        init_weights(self, self.layer5, freeze_bn=freeze_bn)

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self._inplanes != planes * 4 or dilation != 1:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        blocks_ = [Bottleneck(self._inplanes, planes, stride, dilation, downsample)]
        self._inplanes = planes * 4
        blocks_ += [Bottleneck(self._inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*blocks_)

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def backbone_parameters(self):
        """Parameters of conv1..layer4 that require a gradient (the 1x learning-rate group)."""
        return [p for n, p in self.named_parameters() if not n.startswith("layer5.") and p.requires_grad]

    def head_parameters(self):
        """Parameters of the ASPP head (the 10x learning-rate group of the community recipes)."""
        return list(self.layer5.parameters())

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.layer5(x)

    def convert_state_dict(self, state):
        """Maps the multi-level head layout (``layer5`` auxiliary on layer3 with
        1024 inputs, ``layer6`` final) to this model's single ``layer5``."""
        notes = []
        if any(k.startswith("layer6.") for k in state):
            converted = {}
            for k, v in state.items():
                if k.startswith("layer5."):
                    converted["aux_" + k] = v
                elif k.startswith("layer6."):
                    converted["layer5." + k[len("layer6.") :]] = v
                else:
                    converted[k] = v
            state = converted
            notes.append(_AUX_NOTE)
        if not any(k.startswith("layer5.") for k in state):
            notes.append("no ASPP head (`layer5`) in the checkpoint (backbone-only, e.g. ImageNet weights): head left as initialised")
        elif "layer5.branches" in state and self.aspp_branches is not None \
                and int(state["layer5.branches"]) != self.aspp_branches:
            note = (f"the checkpoint was trained summing {int(state['layer5.branches'])} ASPP branches; this model "
                    f"sums {self.aspp_branches} as built (aspp_branches={self.aspp_branches})")
            warnings.warn(f"lse_fast.models: {note}", RuntimeWarning, stacklevel=3)
            notes.append(note)
            state = dict(state)
            state["layer5.branches"] = torch.tensor(self.aspp_branches)
        elif "layer5.branches" not in state and self._head_matches(state):
            n = 2 if self.aspp_branches is None else self.aspp_branches
            how = "auto" if self.aspp_branches is None else f"aspp_branches={self.aspp_branches}"
            note = (f"{_FAMILY_NOTE}; this model sums the first {n} ({how}"
                    + ("; pass aspp_branches=4 to sum all four)" if n == 2 else
                       "; its forward differs from the one the checkpoint was trained with)"))
            warnings.warn(f"lse_fast.models: {note}", RuntimeWarning, stacklevel=3)
            notes.append(note)
            state = dict(state)
            state["layer5.branches"] = torch.tensor(n)
        if "fc.weight" in state:
            notes.append("`fc.*` is an ImageNet classifier, not used by DeepLab-v2")
        return state, notes

    def checkpoint_loaded(self):
        """Called by ``load_checkpoint`` after copying tensors: the ASPP
        layout follows the copied ``layer5.branches`` record."""
        self.layer5.set_branches(int(self.layer5.branches))

    def _head_matches(self, state):
        w = state.get("layer5.conv2d_list.0.weight")
        return w is not None and tuple(w.shape) == tuple(self.layer5.conv2d_list[0].weight.shape)


@register("deeplab_v2_resnet101")
def deeplab_v2_resnet101(num_classes=19, *, freeze_bn=True, input_normalization="caffe", aspp_branches=None):
    """DeepLab-v2 ResNet-101 (output stride 8), community checkpoint layout."""
    return DeepLabV2(num_classes, (3, 4, 23, 3), freeze_bn=freeze_bn, input_normalization=input_normalization,
                     aspp_branches=aspp_branches)
