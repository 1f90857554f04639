"""Segmentation networks in plain PyTorch (no torchvision), a registry, and
checkpoint loading for the state dicts the UDA community shares.

Every model maps images ``[N, 3, H, W]`` to logits ``[N, num_classes, h, w]``
at its output stride and carries two attributes:

* ``output_stride`` (int): about ``H / h`` (1 for logits at input size);
* ``input_normalization`` (``"imagenet"`` or ``"caffe"``): the
  ``lse_fast.data.loader`` normalization its weights expect.

Registered names: ``deeplab_v2_resnet101``, ``fcn8s_vgg16``,
``small_deeplab``. ``build("package.module:factory")`` imports a user's
factory, calls ``factory(num_classes=..., **kwargs)`` and checks the result.
"""

from lse_fast.models.checkpoint import load_checkpoint, read_state_dict
from lse_fast.models.deeplab import DeepLabV2, deeplab_v2_resnet101
from lse_fast.models.fcn import FCN8s, fcn8s_vgg16
from lse_fast.models.registry import available, build, check_model, factory_options, register
from lse_fast.models.small import SmallDeepLab, small_deeplab

__all__ = [
    "DeepLabV2",
    "FCN8s",
    "SmallDeepLab",
    "available",
    "build",
    "check_model",
    "deeplab_v2_resnet101",
    "factory_options",
    "fcn8s_vgg16",
    "load_checkpoint",
    "read_state_dict",
    "register",
    "small_deeplab",
]
