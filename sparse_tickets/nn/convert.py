"""Swapping layers in a user's model: plain torch layers to masked ones and back.

``masked(model)`` puts a mask on every weight it knows how to (see :mod:`.registry`): exact
``nn.Linear`` / ``nn.Conv2d`` become the kernel layers ``MaskedLinear`` / ``MaskedConv2d``, the
weights of every other registered type get a mask buffer in place (:mod:`.weight_mask`), and
tied weights get one mask (:mod:`.tied`). :func:`masking_report` says what it masked and what it
left, and why.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..compact import choice
from . import owners, tied, weight_mask
from .holders import masked_weight_holders, masked_weights
from .layers import MaskedConv2d, MaskedLayer, MaskedLinear, check_adoptable
from .registry import maskable_weights
from .report import masking_report

# Exact types only: a subclass (LazyLinear, MultiheadAttention's out_proj, a user's own) may
# have a forward of its own that a masked layer would silently replace; its weight gets a mask
# buffer instead (registry).
_TO_MASKED = {nn.Linear: MaskedLinear, nn.Conv2d: MaskedConv2d}

Exclude = Iterable[str] | Callable[[str, nn.Module], bool] | None


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

    All or nothing: every layer is checked before any changes, so a refusal (a weight that is
    not a Parameter, a mask name already taken, two Parameters over one memory) leaves the
    model as it was. A model on the meta device gets masks on meta, which ``to_empty`` makes
    all True (see :class:`~.mask.MetaFullMask`).
    """
    skip = _exclusion(exclude, model)
    choice.default_mode()  # a bad SPARSE_TICKETS_MODE is refused before any layer changes
    if not skip("", model) and type(model) in _TO_MASKED:
        return _TO_MASKED[type(model)].from_dense(model)
    swaps = _planned_swaps(model, skip)
    attachments = _planned_attachments(model, skip, swaps)
    _check_plan(model, swaps, attachments)
    # Checked: from here on the model changes all at once.
    new_layers = _swap(swaps)
    for _, module, attribute in attachments:
        weight_mask.attach(module, attribute)
    tied.mark_shared(model)
    with torch.no_grad():  # once the ties are known: a tied weight stays dense
        for layer in new_layers:
            layer._choose_mode(mask_changed=True)
    _warn_unregistered(model, skip)
    return model


# (parent module, child name, qualified name of the child, the child) of a layer to swap
Swap = tuple[nn.Module, str, str, nn.Module]


def _planned_swaps(model: nn.Module, skip) -> list[Swap]:
    return [
        (parent, child_name, qualified, child)
        for qualified, parent, child_name, child in _children(model)
        if type(child) in _TO_MASKED and not skip(qualified, child)
    ]


def _planned_attachments(model: nn.Module, skip, swaps: list[Swap]) -> list[tuple]:
    """``(weight's key, module, attribute)`` of each weight to get a mask buffer: a registered
    weight Parameter that no kernel layer (present or planned) and no other holder masks."""
    swapped = {id(child) for *_, child in swaps}
    masked_params = {id(source.trainable_weight) for source in masked_weights(model).values()}
    masked_params.update(id(child.weight) for *_, child in swaps)
    attachments = []
    for name, module in model.named_modules():
        if skip(name, module) or isinstance(module, MaskedLayer) or id(module) in swapped:
            continue
        for attribute in maskable_weights(module) or ():
            param = module._parameters.get(attribute)
            if (
                isinstance(param, nn.Parameter)
                and id(param) not in masked_params
                and attribute not in weight_mask.masked_weight_names(module)
            ):
                attachments.append(
                    (f"{name}.{attribute}" if name else attribute, module, attribute)
                )
                masked_params.add(id(param))
    return attachments


def _check_plan(model: nn.Module, swaps: list[Swap], attachments: list[tuple]) -> None:
    """Raise ValueError in one line when a planned swap or mask buffer cannot be made."""
    for *_, qualified, child in swaps:
        try:
            check_adoptable(child)
        except ValueError as error:
            raise ValueError(f"{qualified}: {error}") from None
    for key, module, attribute in attachments:
        try:
            weight_mask.check_attachable(module, attribute)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from None
    parameters = tied.masked_parameters(masked_weight_holders(model))
    known = {id(param) for param in parameters.values()}
    for *_, qualified, child in swaps:
        if id(child.weight) not in known:
            known.add(id(child.weight))
            parameters[f"{qualified}.weight"] = child.weight
    for key, module, attribute in attachments:
        parameters[key] = module._parameters[attribute]
    tied.check_unaliased(parameters)


def _swap(swaps: list[Swap]) -> list[MaskedLayer]:
    """Replace each planned child with its kernel layer, in dense mode; the new layers."""
    done: dict[int, MaskedLayer] = {}
    for parent, child_name, _, child in swaps:
        # A layer shared by several parents becomes one shared masked layer.
        new = done.get(id(child))
        if new is None:
            new = done[id(child)] = _TO_MASKED[type(child)].from_dense(child, choose_mode=False)
        setattr(parent, child_name, new)
    return list(done.values())


def unmasked(model: nn.Module) -> nn.Module:
    """Replace every masked layer in ``model`` with the plain torch layer, holding the zeroed
    weights (the same Parameter objects), and remove the mask buffers of the other layers, e.g.
    for export. In place; returns ``model``."""
    for module in model.modules():
        if isinstance(module, MaskedLayer) and module.mode == "dense":
            owners.forget(module._parameters["weight"])
        weight_mask.detach(module)
    if isinstance(model, MaskedLayer):
        return model.to_dense()
    done: dict[int, nn.Module] = {}
    for _, parent, child_name, child in _children(model):
        if isinstance(child, MaskedLayer):
            setattr(parent, child_name, done.setdefault(id(child), child.to_dense()))
    return model


def _warn_unregistered(model: nn.Module, skip) -> None:
    def not_excluded(row) -> bool:
        module_name = row.name.rpartition(".")[0]
        return not skip(module_name, model.get_submodule(module_name))

    unregistered = masking_report(model).unregistered_types(not_excluded)
    if unregistered:
        warnings.warn(
            f"masked() left the weights of unregistered layer types: "
            f"{'; '.join(unregistered)}; register a type with "
            f"sparse_tickets.register_maskable (see masking_report(model) for the "
            f"reasons)",
            stacklevel=3,
        )


def _children(model: nn.Module) -> list[tuple[str, nn.Module, str, nn.Module]]:
    """``(qualified name, parent, child name, child)`` of every child under every name,
    collected first: replacing children while named_modules() walks them would skip some."""
    return [
        (f"{name}.{child_name}" if name else child_name, module, child_name, child)
        for name, module in model.named_modules(remove_duplicate=False)
        # _modules, not named_children(): the latter skips a child registered twice.
        for child_name, child in module._modules.items()
        if child is not None
    ]


def _exclusion(exclude: Exclude, model: nn.Module) -> Callable[[str, nn.Module], bool]:
    if exclude is None:
        return lambda name, module: False
    if callable(exclude):
        return exclude
    names = set([exclude] if isinstance(exclude, str) else exclude)
    known = {name for name, _ in model.named_modules()}
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(
            f"exclude names modules not in the model: {', '.join(unknown)}; "
            f"expected qualified names such as {sorted(known - {''})[:3]}"
        )
    prefixes = tuple(f"{name}." for name in names)
    return lambda name, module: name in names or name.startswith(prefixes)
