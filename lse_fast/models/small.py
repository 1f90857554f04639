"""A small network of the DeepLab-v2 family sized for a CPU: a dilated
residual backbone (output stride 8) and the summed ASPP classifier, with
ordinary trainable BatchNorm (it trains from scratch). The default model of
``python -m lse_fast.adapt`` on the built-in synthetic data.
"""

import torch.nn.functional as F
from torch import nn

from lse_fast.models.registry import register
from lse_fast.models.deeplab import ASPPSum, init_weights


def _conv_bn(cin, cout, stride=1, dilation=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, cin, cout, stride=1, dilation=1):
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, stride, dilation)
        self.conv2 = _conv_bn(cout, cout, 1, dilation)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(F.relu(self.conv1(x))) + identity)


class SmallDeepLab(nn.Module):
    """Dilated residual backbone + summed ASPP, output stride 8.

    Layout: stem 3x3/2 -> ``widths[0]``; block /2 -> ``widths[1]``; block /2 ->
    ``widths[2]``; then one block per entry of ``dilations`` at stride 8
    (dilated instead of strided, as DeepLab); ASPP with ``aspp_dilations``.
    """

    output_stride = 8
    record_buffers = ("classifier.branches",)  # the ASPP layout record (always 4 here)
    head_prefixes = ("classifier.",)
    input_normalization = "imagenet"

    def __init__(self, num_classes=19, *, widths=(16, 32, 64), dilations=(2, 4), aspp_dilations=(1, 2, 4, 8)):
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"lse_fast.models.SmallDeepLab: `widths` must have 3 entries, got {widths!r}")
        self.num_classes = num_classes
        w0, w1, w2 = widths
        self.stem = nn.Sequential(_conv_bn(3, w0, stride=2), nn.ReLU(inplace=True))
        self.layer1 = BasicBlock(w0, w1, stride=2)
        self.layer2 = BasicBlock(w1, w2, stride=2)
        self.layer3 = nn.Sequential(*[BasicBlock(w2, w2, dilation=d) for d in dilations])
        self.classifier = ASPPSum(w2, num_classes, aspp_dilations)
        init_weights(self, self.classifier)

    def forward(self, x):
        return self.classifier(self.layer3(self.layer2(self.layer1(self.stem(x)))))


@register("small_deeplab")
def small_deeplab(num_classes=19, **kwargs):
    """CPU-sized DeepLab-style network (0.26 M parameters with the default widths), output stride 8."""
    return SmallDeepLab(num_classes, **kwargs)
