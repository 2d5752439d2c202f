"""The state_dict of a masked model as the plain model has it: no mask buffers."""

from __future__ import annotations

from torch import nn

from .layers import MaskedLayer
from .weight_mask import MASK_SUFFIX, masked_weight_names


def mask_keys(model: nn.Module) -> list[str]:
    """The state_dict keys of every mask buffer of ``model`` (kernel layers' ``mask`` and the
    maskable weights' ``<name>_mask``), under every name a module goes by."""
    keys = []
    for name, module in model.named_modules(remove_duplicate=False):
        prefix = f"{name}." if name else ""
        if isinstance(module, MaskedLayer):
            keys.append(prefix + "mask")
        keys.extend(prefix + attribute + MASK_SUFFIX for attribute in masked_weight_names(module))
    return keys


def plain_state_dict(model: nn.Module, **kwargs) -> dict:
    """``model.state_dict(**kwargs)`` without the mask buffers: what the model's original class
    loads with ``strict=True`` (pruned weights are 0.0 in it; compact layers give their dense
    weight, as they always do)."""
    state = model.state_dict(**kwargs)
    prefix = kwargs.get("prefix", "")
    for key in mask_keys(model):
        state.pop(prefix + key, None)
    return state
