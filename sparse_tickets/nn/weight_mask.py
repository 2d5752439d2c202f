"""Masks on the weights of any layer, without swapping its class or its forward.

A maskable weight ``<name>`` of a module gets a bool buffer ``<name>_mask`` of its shape. The
weight is exactly 0.0 where the mask is False: zeroed at :meth:`MaskedWeight.set_mask` and after
a state_dict is loaded, its gradient masked after every backward (``owners.mask_gradient``;
a deep copy or an unpickled copy from its first backward, see ``owners.CopiedGradientMasks``),
and the masked optimizers keep it so at every step. So the module's own forward computes with
``weight ⊙ mask``, and a plain torch.optim optimizer cannot move a pruned weight off zero either
(see :mod:`sparse_tickets.optim.plain`). Dense mode only: the compact kernels serve
``MaskedLinear`` and ``MaskedConv2d``.
"""

from __future__ import annotations

import torch
from torch import nn

from . import owners
from .mask import count_kept, full_mask_like, materialised_mask, validate_mask

MASK_SUFFIX = "_mask"
# module.__dict__ keys: the names of the module's masked weights (a tuple, so copies keep it),
# and the owners.CopiedGradientMasks that registers the Parameters of its copies.
_NAMES = "_masked_weight_names"
_COPIES = "_masked_weight_gradients"


class MaskedWeight:
    """One maskable weight of a module: its Parameter, its mask buffer, and the operations the
    pruning side needs (the interface of a masked layer: ``weight``, ``mask``, ``set_mask``,
    ``apply_mask``, ``mode``, ``trainable_weight``)."""

    mode = "dense"

    def __init__(self, module: nn.Module, attribute: str) -> None:
        self.module, self.attribute = module, attribute

    @property
    def mask_name(self) -> str:
        return self.attribute + MASK_SUFFIX

    @property
    def weight(self) -> nn.Parameter:
        return self.module._parameters[self.attribute]

    trainable_weight = weight

    @property
    def mask(self) -> torch.Tensor:
        return self.module._buffers[self.mask_name]

    @torch.no_grad()
    def set_mask(self, mask) -> None:
        """Replace the mask (in place, so references stay valid) and zero what it prunes."""
        mask = validate_mask(mask, self.mask)
        self.mask.copy_(mask)
        self.apply_mask()
        owners.note_change()

    @torch.no_grad()
    def apply_mask(self) -> None:
        _materialise(self.module, self.attribute)
        self.weight.masked_fill_(~self.mask, 0.0)

    @property
    def num_unpruned(self) -> int:
        return count_kept(self.mask, f"{type(self.module).__name__}.{self.attribute}")

    @property
    def density(self) -> float:
        return self.num_unpruned / max(self.mask.numel(), 1)

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, MaskedWeight)
            and other.module is self.module
            and other.attribute == self.attribute
        )

    def __hash__(self) -> int:
        return hash((id(self.module), self.attribute))

    def __repr__(self) -> str:
        return f"MaskedWeight({type(self.module).__name__}.{self.attribute})"


def masked_weight_names(module: nn.Module) -> tuple[str, ...]:
    """The names of ``module``'s weights that carry a mask buffer (kernel layers excluded)."""
    return module.__dict__.get(_NAMES, ())


def attach(module: nn.Module, attribute: str) -> MaskedWeight:
    """Give ``module``'s Parameter ``attribute`` an all-True mask buffer ``<attribute>_mask``."""
    check_attachable(module, attribute)
    module.register_buffer(attribute + MASK_SUFFIX, full_mask_like(module._parameters[attribute]))
    first = not masked_weight_names(module)
    module.__dict__[_NAMES] = (*masked_weight_names(module), attribute)
    if first:
        module.__dict__[_COPIES] = owners.CopiedGradientMasks(module)
        module.register_load_state_dict_post_hook(_after_load)
        module.register_forward_pre_hook(_register_copies)
    _register(module, attribute)
    return MaskedWeight(module, attribute)


def check_attachable(module: nn.Module, attribute: str) -> None:
    """Raise ValueError in one line when :func:`attach` cannot mask ``module.<attribute>``."""
    if not isinstance(module._parameters.get(attribute), nn.Parameter):
        raise ValueError(
            f"{type(module).__name__}.{attribute} is not a Parameter; expected a "
            f"weight Parameter to mask"
        )
    mask_name = attribute + MASK_SUFFIX
    if hasattr(module, mask_name):
        raise ValueError(
            f"{type(module).__name__} already has an attribute {mask_name!r} (is it "
            f"pruned with torch.nn.utils.prune? import it with "
            f"Masks.from_torch_prune); expected a plain layer"
        )


def detach(module: nn.Module) -> None:
    """Remove every mask buffer :func:`attach` gave ``module`` (the weights stay as they are)."""
    for attribute in masked_weight_names(module):
        owners.forget(module._parameters[attribute])
        del module._buffers[attribute + MASK_SUFFIX]
    module.__dict__.pop(_NAMES, None)
    module.__dict__.pop(_COPIES, None)
    # The hooks stay registered but find no names: torch has no way to remove a hook by value.


def _register(module: nn.Module, attribute: str) -> None:
    param = module._parameters[attribute]
    mask_name = attribute + MASK_SUFFIX
    owners.register(param, module, mask_name)
    owners.mask_gradient(param, module, mask_name)
    copies = module.__dict__.get(_COPIES)
    if copies is None:
        copies = module.__dict__[_COPIES] = owners.CopiedGradientMasks(module)
    copies.track(param, mask_name)
    owners.note_change()


def _materialise(module: nn.Module, attribute: str) -> None:
    # A mask still on meta beside a weight given storage (see .mask.materialised_mask).
    mask_name = attribute + MASK_SUFFIX
    mask = module._buffers[mask_name]
    if mask.is_meta:
        module._buffers[mask_name] = materialised_mask(mask, module._parameters[attribute])


def _register_copies(module: nn.Module, args) -> None:
    # A Parameter replaced by hand has no hook yet (copies are registered as they are made,
    # see owners.CopiedGradientMasks, and loads in _after_load); registering inside a compiled
    # graph would break it.
    if torch.compiler.is_compiling():
        return
    for attribute in masked_weight_names(module):
        _materialise(module, attribute)
        owner = owners.owner_of(module._parameters[attribute])
        if owner is None or owner[0] is not module:
            _register(module, attribute)


def _after_load(module: nn.Module, incompatible_keys) -> None:
    with torch.no_grad():
        for attribute in masked_weight_names(module):
            _register(module, attribute)
            MaskedWeight(module, attribute).apply_mask()
