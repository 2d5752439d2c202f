"""Finding a model's masked weights: every Parameter that carries a mask, and who holds it.

A mask is held by a kernel layer (``MaskedLinear``, ``MaskedConv2d``: :mod:`.layers`) or by a
mask buffer on a weight of any other registered type (:mod:`.weight_mask`); a tied weight may
have several holders, all given the same mask (:mod:`.tied`).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from . import weight_mask
from .layers import MaskedLayer

MaskSource = MaskedLayer | weight_mask.MaskedWeight


def masked_layers(model: nn.Module) -> Iterator[tuple[str, MaskedLayer]]:
    """``(qualified name, layer)`` for every kernel masked layer of ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, MaskedLayer):
            yield name, module


def masked_weights(model: nn.Module) -> dict[str, MaskSource]:
    """Every masked weight of ``model``, kernel layers and maskable ones, in module order:
    the weight's state_dict key (``"fc1.weight"``, ``"attn.in_proj_weight"``) -> its layer
    (``MaskedLayer``) or :class:`~.weight_mask.MaskedWeight`. One entry per Parameter: a tied
    weight goes by its first masked holder."""
    return {key: sources[0] for key, sources in masked_weight_holders(model).items()}


def masked_weight_holders(model: nn.Module) -> dict[str, list[MaskSource]]:
    """As :func:`masked_weights`, with every masked holder of each Parameter (two kernel layers
    tied to one weight each keep a mask, and both must be given the same)."""
    groups: dict[str, list[MaskSource]] = {}
    key_of: dict[int, str] = {}
    for name, module in model.named_modules():
        sources = []
        if isinstance(module, MaskedLayer):
            sources.append((f"{name}.weight" if name else "weight", module))
        for attribute in weight_mask.masked_weight_names(module):
            sources.append(
                (
                    f"{name}.{attribute}" if name else attribute,
                    weight_mask.MaskedWeight(module, attribute),
                )
            )
        for key, source in sources:
            param_id = id(source.trainable_weight)
            if param_id in key_of:
                groups[key_of[param_id]].append(source)
            else:
                key_of[param_id] = key
                groups[key] = [source]
    return groups
