"""The networks of Frankle & Carbin (ICLR 2019, Figure 2), built from masked layers.

Every Linear and Conv2d is a :class:`~sparse_tickets.nn.MaskedLinear` or
:class:`~sparse_tickets.nn.MaskedConv2d` from construction; BatchNorm stays plain torch. Build
one by name with :func:`create` (``names()`` lists them); each model's ``output_layer_name``
(or :func:`output_layer`) names its final classifier layer.
"""

from .conv import ConvNet, conv2, conv4, conv6
from .init import glorot_normal_, kaiming_normal_
from .lenet import LeNet300100, lenet_300_100
from .registry import MODELS, ModelSpec, create, names, output_layer, spec
from .resnet import BasicBlock, ResNet20, resnet20
from .vgg import VGG19, vgg19

__all__ = [
    "BasicBlock",
    "ConvNet",
    "LeNet300100",
    "MODELS",
    "ModelSpec",
    "ResNet20",
    "VGG19",
    "conv2",
    "conv4",
    "conv6",
    "create",
    "glorot_normal_",
    "kaiming_normal_",
    "lenet_300_100",
    "names",
    "output_layer",
    "resnet20",
    "spec",
    "vgg19",
]
