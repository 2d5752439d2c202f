"""The models by name: a plain dict of :class:`ModelSpec`, and :func:`create` to build one."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .conv import conv2, conv4, conv6
from .lenet import lenet_300_100
from .resnet import resnet20
from .vgg import vgg19

# Every builder takes these two; anything else it takes is a model-specific option.
_COMMON_ARGUMENTS = ("input_shape", "num_classes")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, the function that builds it, and the input it expects.

    ``builder(input_shape, num_classes, **options)`` returns the model.
    """

    name: str
    builder: Callable[..., nn.Module]
    default_input_shape: tuple[int, int, int]
    description: str

    @property
    def options(self) -> tuple[str, ...]:
        """The names of the keyword options the builder takes beyond the common arguments."""
        parameters = inspect.signature(self.builder).parameters
        return tuple(name for name in parameters if name not in _COMMON_ARGUMENTS)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "lenet_300_100",
            lenet_300_100,
            (1, 28, 28),
            "MNIST LeNet: fc 300, fc 100, fc 10; Glorot normal init",
        ),
        ModelSpec(
            "conv2",
            conv2,
            (3, 32, 32),
            "CIFAR-10 Conv-2: 64, 64, pool, fc 256, 256, 10; Glorot normal init",
        ),
        ModelSpec(
            "conv4",
            conv4,
            (3, 32, 32),
            "CIFAR-10 Conv-4: 64, 64, pool, 128, 128, pool, fc 256, 256, 10",
        ),
        ModelSpec(
            "conv6",
            conv6,
            (3, 32, 32),
            "CIFAR-10 Conv-6: 64, 64, pool, 128, 128, pool, 256, 256, pool, fc 256, 256, 10",
        ),
        ModelSpec(
            "vgg19",
            vgg19,
            (3, 32, 32),
            "CIFAR-10 VGG-19 with batch norm, average pool, fc 512 -> 10; Kaiming normal init",
        ),
        ModelSpec(
            "resnet20",
            resnet20,
            (3, 32, 32),
            "CIFAR-10 ResNet-20 (the paper's 'Resnet-18'), 16/32/64 channels; Kaiming normal init",
        ),
    )
}


def names() -> list[str]:
    """The registered model names, in the order of the paper's Figure 2."""
    return list(MODELS)


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``; ValueError listing the known names if none."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str; got {type(name).__name__}")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name]


def create(
    name: str, input_shape: tuple[int, int, int] | None = None, num_classes: int = 10, **options
) -> nn.Module:
    """Build the model registered as ``name`` from masked layers, freshly initialised.

    ``input_shape`` is ``(channels, height, width)``, the model's default when None;
    ``options`` are the model's own keyword options (``dropout`` for conv2/4/6). A shape the
    model cannot take fails here with ValueError, an option it does not have with TypeError.
    """
    model_spec = spec(name)
    unknown = sorted(set(options) - set(model_spec.options))
    if unknown:
        accepted = ", ".join(model_spec.options) or "none"
        raise TypeError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; its options: {accepted}"
        )
    if input_shape is None:
        input_shape = model_spec.default_input_shape
    return model_spec.builder(input_shape=input_shape, num_classes=num_classes, **options)


def output_layer(model: nn.Module) -> str:
    """The qualified module name of ``model``'s final classifier layer (its
    ``output_layer_name``), for pruning presets that treat that layer apart."""
    name = getattr(model, "output_layer_name", None)
    if not isinstance(name, str):
        raise ValueError(
            f"{type(model).__name__} has no output_layer_name; expected a model "
            f"from sparse_tickets.models or one that sets output_layer_name to a "
            f"qualified module name"
        )
    try:
        model.get_submodule(name)
    except AttributeError:
        raise ValueError(
            f"{type(model).__name__}.output_layer_name is {name!r}, which names no "
            f"module of the model"
        ) from None
    return name
