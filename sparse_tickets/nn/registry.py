"""Which layer types carry masks, and on which of their Parameters.

Two kinds of masked weight:

- Kernel layers: an exact ``nn.Linear`` or ``nn.Conv2d`` is swapped for ``MaskedLinear`` /
  ``MaskedConv2d``, whose forward runs the masked kernels and which can run in compact mode.
- Maskable layers: any other registered type keeps its class and its forward; each named weight
  Parameter gets a bool buffer ``<name>_mask`` beside it (see :mod:`.weight_mask`). The weight is
  kept at exactly 0.0 where the mask is False (zeroed at every mask change and load, its
  gradient masked, the masked optimizers keep it so), so the layer's own forward computes with
  ``weight ⊙ mask``. Dense mode only.

Registered here: Linear and Conv2d subclasses (e.g. MultiheadAttention's ``out_proj``), Conv1d,
Conv3d, the transposed convolutions, Embedding, EmbeddingBag, Bilinear, MultiheadAttention's
input projections, and transformers' ``Conv1D`` (by name, so transformers need not be
installed). Register your own layer with :func:`register_maskable`::

    register_maskable(MyLayer, weights=("weight", "gate_weight"))
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

LayerType = type | str

# type, or "module.QualName" for a class we must not import -> names of its weight Parameters
_MASKABLE: dict[LayerType, tuple[str, ...]] = {}


def register_maskable(layer_type: LayerType, weights: Iterable[str] = ("weight",)) -> None:
    """Let ``masked()`` put masks on the ``weights`` Parameters of every ``layer_type`` module
    (and of subclasses that are not registered themselves). ``layer_type`` is a class, or its
    ``"module.QualifiedName"`` for a class of a package that may not be installed. A weight that
    is None or not a Parameter on a given module is left alone (and reported)."""
    if isinstance(weights, str):
        weights = (weights,)
    weights = tuple(weights)
    if (
        not isinstance(layer_type, (type, str))
        or not weights
        or not all(isinstance(name, str) and name.isidentifier() for name in weights)
    ):
        raise TypeError(
            f"register_maskable expects a class (or 'module.ClassName') and a tuple "
            f"of Parameter names; got {layer_type!r}, {weights!r}"
        )
    _MASKABLE[layer_type] = weights


def maskable_weights(module: nn.Module) -> tuple[str, ...] | None:
    """The registered weight names of ``module``'s type (its nearest registered class), or None
    when no class of its type is registered."""
    for cls in type(module).__mro__:
        names = _MASKABLE.get(cls)
        if names is None:
            names = _MASKABLE.get(f"{cls.__module__}.{cls.__qualname__}")
        if names is not None:
            return names
    return None


for _layer_type in (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.Bilinear,
    "transformers.pytorch_utils.Conv1D",
):
    register_maskable(_layer_type)
# in_proj_weight when query, key and value share one size; the three others when they do not.
register_maskable(
    nn.MultiheadAttention, ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
)
