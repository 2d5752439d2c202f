"""Swapping layers in a user's model: plain torch layers to masked ones and back."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional, Union

from torch import nn

from .layers import MaskedConv2d, MaskedLayer, MaskedLinear

# Exact types only: a subclass (LazyLinear, MultiheadAttention's out_proj, a user's own) may
# have a forward of its own that a masked layer would silently replace.
_TO_MASKED = {nn.Linear: MaskedLinear, nn.Conv2d: MaskedConv2d}

Exclude = Union[Iterable[str], Callable[[str, nn.Module], bool], None]


def masked(model: nn.Module, exclude: Exclude = None) -> nn.Module:
    """Replace every ``nn.Linear`` and ``nn.Conv2d`` in ``model`` with its masked layer.

    The masked layers share the original Parameter objects (same values, device, dtype, and an
    optimizer built before the swap keeps working) and start with all-True masks. ``exclude``
    is a collection of qualified module names, or a predicate ``(name, module) -> bool``, for
    layers to leave alone. Converts in place and returns ``model`` (or the new layer when
    ``model`` itself is a Linear or Conv2d). Excluding a module excludes everything inside it.
    """
    skip = _exclusion(exclude, model)
    return _swap(model, lambda name, m: None if skip(name, m) or type(m) not in _TO_MASKED
                 else _TO_MASKED[type(m)].from_dense(m))


def unmasked(model: nn.Module) -> nn.Module:
    """Replace every masked layer in ``model`` with the plain torch layer, holding the zeroed
    weights (the same Parameter objects), e.g. for export. In place; returns ``model``."""
    return _swap(model, lambda name, m: m.to_dense() if isinstance(m, MaskedLayer) else None)


def masked_layers(model: nn.Module) -> Iterator[tuple[str, MaskedLayer]]:
    """``(qualified name, layer)`` for every masked layer of ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, MaskedLayer):
            yield name, module


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
