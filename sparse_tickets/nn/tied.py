"""Tied (shared) weights: one Parameter held by several modules, e.g. a language model's
output head and its input embedding.

A shared weight has one mask, held by one of its holders; the gradient is masked on the
Parameter itself, so the pruned entries get no signal from any holder's path. A kernel layer
whose weight is shared is marked (``layer.weight_shared_with``) and stays in dense mode: compact
mode keeps only the kept values as the trainable Parameter, which the other holders could not
read (see :func:`sparse_tickets.compact.choice.compact_unsupported_reason`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
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
        others = tuple(name for name in others if _module_of(model, name) is not module)
        module.__dict__["weight_shared_with"] = others
        if others:
            owners.mask_gradient(weight, module, "mask")


def _module_of(model: nn.Module, parameter_name: str) -> nn.Module:
    module_name = parameter_name.rpartition(".")[0]
    return model.get_submodule(module_name) if module_name else model


def masked_parameters(groups: Mapping[str, list]) -> dict[str, torch.Tensor]:
    """The trainable Parameter of each masked weight of
    :func:`~sparse_tickets.nn.holders.masked_weight_holders`' ``groups``, by key."""
    return {key: sources[0].trainable_weight for key, sources in groups.items()}


def check_unaliased(parameters: Mapping[str, torch.Tensor]) -> None:
    """Raise ValueError in one line when two of ``parameters`` (name -> distinct Parameters to
    mask) share memory (see the module). Meta tensors have no memory to share."""
    spans = []
    for name, param in parameters.items():
        if param.is_meta or param.numel() == 0:
            continue
        # Bytes from the first element to one past the last, by the strides: a conservative
        # span for a strided view (two interleaved views are refused as if they overlapped).
        extent = 1 + sum((size - 1) * stride for size, stride in zip(param.shape, param.stride()))
        start = param.data_ptr()
        spans.append((start, start + extent * param.element_size(), name))
    spans.sort()
    furthest = None  # (end, name) of the span reaching furthest so far
    for start, end, name in spans:
        if furthest is not None and start < furthest[0]:
            raise ValueError(
                f"masked weights {furthest[1]!r} and {name!r} are different "
                f"Parameters over the same memory (views of one tensor, or "
                f"nn.Parameter made twice of one tensor), so their masks would "
                f"contradict each other; expected one Parameter object shared by "
                f"both modules for a tied weight, or separate memory (.clone())"
            )
        if furthest is None or end > furthest[0]:
            furthest = (end, name)
