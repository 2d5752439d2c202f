"""Tied (shared) weights: one Parameter held by several modules, e.g. a language model's
output head and its input embedding.

A shared weight has one mask, held by one of its holders; the gradient is masked on the
Parameter itself, so the pruned entries get no signal from any holder's path. A kernel layer
whose weight is shared is marked (``layer.weight_shared_with``) and stays in dense mode: compact
mode keeps only the kept values as the trainable Parameter, which the other holders could not
read (see :func:`sparse_tickets.compact.choice.compact_unsupported_reason`).
"""

from __future__ import annotations

from torch import nn

from . import owners
from .layers import MaskedLayer


def parameter_holders(model: nn.Module) -> dict[int, list[str]]:
    """``id(Parameter) -> qualified names`` (module name + attribute) of every place that holds
    it, for the Parameters held in more than one place."""
    holders: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        holders.setdefault(id(param), []).append(name)
    return {key: names for key, names in holders.items() if len(names) > 1}


def mark_shared(model: nn.Module) -> None:
    """Mark every kernel layer of ``model`` whose dense weight other modules hold too, and mask
    that weight's gradient on the Parameter (it may come through the other holders' paths)."""
    shared = parameter_holders(model)
    for module_name, module in model.named_modules(remove_duplicate=False):
        if not isinstance(module, MaskedLayer) or module.mode != "dense":
            continue
        weight = module._parameters["weight"]
        own = f"{module_name}.weight" if module_name else "weight"
        others = tuple(name for name in shared.get(id(weight), ()) if name != own)
        # A layer registered under two names is one holder, not a tie.
        others = tuple(name for name in others
                       if _module_of(model, name) is not module)
        module.__dict__["weight_shared_with"] = others
        if others:
            owners.mask_gradient(weight, module, "mask")


def _module_of(model: nn.Module, parameter_name: str) -> nn.Module:
    module_name = parameter_name.rpartition(".")[0]
    return model.get_submodule(module_name) if module_name else model
