"""Masks to and from ``torch.nn.utils.prune``.

torch's pruning keeps, for a pruned tensor ``<name>`` of a module, the Parameter
``<name>_orig``, the buffer ``<name>_mask`` (float 0/1) and a forward pre-hook computing
``<name> = <name>_orig * <name>_mask``. These functions move masks across; values are exact.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..nn import MaskedLayer
from ..nn.weight_mask import masked_weight_names
from .names import format_names


def torch_pruned(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """``"module.tensor" -> (module, tensor name)`` for every tensor torch's pruning prunes."""
    found = {}
    for module_name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                key = f"{module_name}.{hook._tensor_name}" if module_name else hook._tensor_name
                found[key] = (module, hook._tensor_name)
    return found


def masks_from_torch_prune(model: nn.Module, remove: bool) -> dict[str, torch.Tensor]:
    """The bool masks of every tensor torch's pruning prunes in ``model``; with ``remove``,
    the pruning is also made permanent (``prune.remove``: plain Parameters holding
    ``orig * mask``), so ``sparse_tickets.masked(model)`` can convert the layers."""
    pruned = torch_pruned(model)
    if not pruned:
        raise ValueError(
            f"{type(model).__name__} has no tensor pruned with "
            f"torch.nn.utils.prune; expected a model pruned with it"
        )
    masks = {
        key: module._buffers[f"{name}_mask"].detach() != 0 for key, (module, name) in pruned.items()
    }
    if remove:
        for module, name in pruned.values():
            torch_prune.remove(module, name)
    return masks


def masks_to_torch_prune(masks, model: nn.Module) -> None:
    """Prune ``model`` (a plain model) with ``torch.nn.utils.prune.custom_from_mask`` at each of
    ``masks``; every name and shape is checked before any module changes."""
    targets = {}
    for key, mask in masks.items():
        module_name, _, name = key.rpartition(".")
        try:
            module = model.get_submodule(module_name) if module_name else model
        except AttributeError:
            module = None
        param = None if module is None else module._parameters.get(name)
        if param is None:
            raise ValueError(
                f"masks[{key!r}] names no Parameter of the model; expected keys "
                f"such as {format_names(n for n, _ in model.named_parameters())}"
            )
        if isinstance(module, MaskedLayer) or masked_weight_names(module):
            raise ValueError(
                f"{module_name or 'the model'} carries sparse_tickets masks; "
                f"expected a plain model (take them out with "
                f"sparse_tickets.unmasked(model) first)"
            )
        if tuple(param.shape) != tuple(mask.shape):
            raise ValueError(
                f"masks[{key!r}] has shape {tuple(mask.shape)}; expected the "
                f"Parameter's shape {tuple(param.shape)}"
            )
        targets[key] = (module, name, mask.to(param.device))
    for module, name, mask in targets.values():
        torch_prune.custom_from_mask(module, name, mask)
