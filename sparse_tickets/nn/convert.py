"""Swapping layers in a user's model: plain torch layers to masked ones and back.

``masked(model)`` puts a mask on every weight it knows how to (see :mod:`.registry`): exact
``nn.Linear`` / ``nn.Conv2d`` become the kernel layers ``MaskedLinear`` / ``MaskedConv2d``, the
weights of every other registered type get a mask buffer in place (:mod:`.weight_mask`), and
tied weights get one mask (:mod:`.tied`). :func:`masking_report` says what it masked and what it
left, and why.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable, Optional, Union

from torch import nn

from . import owners, tied, weight_mask
from .layers import MaskedConv2d, MaskedLayer, MaskedLinear
from .holders import masked_weights
from .registry import maskable_weights
from .report import masking_report

# Exact types only: a subclass (LazyLinear, MultiheadAttention's out_proj, a user's own) may
# have a forward of its own that a masked layer would silently replace; its weight gets a mask
# buffer instead (registry).
_TO_MASKED = {nn.Linear: MaskedLinear, nn.Conv2d: MaskedConv2d}

Exclude = Union[Iterable[str], Callable[[str, nn.Module], bool], None]


def masked(model: nn.Module, exclude: Exclude = None) -> nn.Module:
    """Put a mask on every weight of ``model`` that a kernel layer or a registered maskable
    layer type covers (see the module), all masks True.

    Kernel layers share the original Parameter objects (same values, device, dtype, and an
    optimizer built before the swap keeps working). ``exclude`` is a collection of qualified
    module names, or a predicate ``(name, module) -> bool``, for layers to leave alone;
    excluding a module excludes everything inside it. Converts in place and returns ``model``
    (or the new layer when ``model`` itself is a Linear or Conv2d). Warns, naming them, when
    modules of unregistered types hold weights it had to leave; :func:`masking_report` lists
    everything.
    """
    skip = _exclusion(exclude, model)
    model = _swap(model, lambda name, m: None if skip(name, m) or type(m) not in _TO_MASKED
                  else _TO_MASKED[type(m)].from_dense(m))
    masked_params = {id(source.trainable_weight) for source in masked_weights(model).values()}
    for name, module in model.named_modules():
        if skip(name, module) or isinstance(module, MaskedLayer):
            continue
        for attribute in maskable_weights(module) or ():
            param = module._parameters.get(attribute)
            if (isinstance(param, nn.Parameter) and id(param) not in masked_params
                    and attribute not in weight_mask.masked_weight_names(module)):
                weight_mask.attach(module, attribute)
                masked_params.add(id(param))
    tied.mark_shared(model)
    _warn_unregistered(model, skip)
    return model


def unmasked(model: nn.Module) -> nn.Module:
    """Replace every masked layer in ``model`` with the plain torch layer, holding the zeroed
    weights (the same Parameter objects), and remove the mask buffers of the other layers, e.g.
    for export. In place; returns ``model``."""
    for module in model.modules():
        if isinstance(module, MaskedLayer) and module.mode == "dense":
            owners.forget(module._parameters["weight"])
        weight_mask.detach(module)
    return _swap(model, lambda name, m: m.to_dense() if isinstance(m, MaskedLayer) else None)


def _warn_unregistered(model: nn.Module, skip) -> None:
    def not_excluded(row) -> bool:
        module_name = row.name.rpartition(".")[0]
        return not skip(module_name, model.get_submodule(module_name))

    unregistered = masking_report(model).unregistered_types(not_excluded)
    if unregistered:
        warnings.warn(f"masked() left the weights of unregistered layer types: "
                      f"{'; '.join(unregistered)}; register a type with "
                      f"sparse_tickets.register_maskable (see masking_report(model) for the "
                      f"reasons)", stacklevel=3)


def _swap(model: nn.Module, replacement: Callable[[str, nn.Module], Optional[nn.Module]]):
    root = replacement("", model)
    if root is not None:
        return root
    # Collect first: replacing children while named_modules() walks them would skip some.
    swaps = []
    for name, module in model.named_modules(remove_duplicate=False):
        # _modules, not named_children(): the latter skips a child registered twice.
        for child_name, child in module._modules.items():
            if child is None:
                continue
            new = replacement(f"{name}.{child_name}" if name else child_name, child)
            if new is not None:
                swaps.append((module, child_name, child, new))
    done = {}
    for parent, child_name, child, new in swaps:
        # A layer shared by several parents becomes one shared masked layer.
        setattr(parent, child_name, done.setdefault(id(child), new))
    return model


def _exclusion(exclude: Exclude, model: nn.Module) -> Callable[[str, nn.Module], bool]:
    if exclude is None:
        return lambda name, module: False
    if callable(exclude):
        return exclude
    names = set([exclude] if isinstance(exclude, str) else exclude)
    known = {name for name, _ in model.named_modules()}
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(f"exclude names modules not in the model: {', '.join(unknown)}; "
                         f"expected qualified names such as {sorted(known - {''})[:3]}")
    prefixes = tuple(f"{name}." for name in names)
    return lambda name, module: name in names or name.startswith(prefixes)
