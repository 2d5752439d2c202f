"""Which masked layer owns each masked Parameter: how optimizers find the masks of the
parameters they are given, and how a Parameter's gradient is masked on every path into it.

Every Parameter that carries a mask is registered here (weakly: the registry keeps neither the
Parameter nor the layer alive) with the module holding its mask and the name of that mask
buffer: a kernel layer's ``weight`` and ``values`` (``"mask"``), a maskable layer's weight
(``"<name>_mask"``). Lookups are by identity, as torch.optim keys its state.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils.weak import WeakTensorKeyDictionary

# Parameter -> (weakref to the owning module, mask buffer name)
_OWNERS = WeakTensorKeyDictionary()
# Parameter -> its gradient-masking hook handle
_GRAD_HOOKS = WeakTensorKeyDictionary()
# Counts mask and mode changes, so a plain optimizer re-checks its parameters only after one.
_changes = 0


def note_change() -> None:
    """A mask or an execution mode changed somewhere (see :mod:`sparse_tickets.optim.plain`)."""
    global _changes
    _changes += 1


def changes() -> int:
    return _changes


def register(param: torch.Tensor, module: nn.Module, mask_name: str) -> None:
    """Record that ``module``'s buffer ``mask_name`` masks ``param``."""
    _OWNERS[param] = (weakref.ref(module), mask_name)


def owner_of(param: torch.Tensor) -> tuple[nn.Module, str] | None:
    """``(module, mask buffer name)`` for a registered Parameter whose module is alive."""
    entry = _OWNERS.get(param)
    if entry is None:
        return None
    module = entry[0]()
    return None if module is None else (module, entry[1])


def mask_gradient(param: torch.Tensor, module: nn.Module, mask_name: str) -> None:
    """Zero ``param.grad`` where ``module``'s mask is False after every backward, whatever the
    path the gradient came by (a tied embedding, a layer's own forward). Idempotent."""
    if param in _GRAD_HOOKS:
        return
    _GRAD_HOOKS[param] = param.register_post_accumulate_grad_hook(
        _MaskedGradient(weakref.ref(module), mask_name)
    )


def unmask_gradient(param: torch.Tensor) -> None:
    handle = _GRAD_HOOKS.pop(param, None)
    if handle is not None:
        handle.remove()


def forget(param: torch.Tensor) -> None:
    """Stop treating ``param`` as masked (its layer was unmasked)."""
    _OWNERS.pop(param, None)
    unmask_gradient(param)


class CopiedGradientMasks:
    """The gradient masking of a module's Parameters, carried into its copies.

    A deep copy or an unpickled copy of a module holds new Parameters, which no hook masks yet.
    A module whose class is ours registers them in ``__setstate__``; a module of any other class
    (an Embedding, transformers' Conv1D) holds this object in its ``__dict__`` instead, and the
    copy of this object, made inside the copy of the module with the same memo, registers the
    copied Parameters as it is made. So the copy masks its gradients from its very first
    backward, even when its first forward is compiled, where no hook can be registered.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module_ref = weakref.ref(module)
        self.parameters: dict[str, torch.Tensor] = {}  # mask buffer name -> its Parameter

    def track(self, param: torch.Tensor, mask_name: str) -> None:
        self.parameters[mask_name] = param

    def __reduce__(self):
        # deepcopy and pickle alike: the module and the Parameters are copied through the memo
        # of the copy being made, so they are the copy's own objects.
        return (_copied_gradient_masks, (self.module_ref(), dict(self.parameters)))


def _copied_gradient_masks(module: nn.Module, parameters: dict) -> CopiedGradientMasks:
    # The module may still be half built (its state comes after this object): only a weak
    # reference to it is kept, and its mask buffers are read at each backward.
    masks = CopiedGradientMasks(module)
    for mask_name, param in parameters.items():
        register(param, module, mask_name)
        mask_gradient(param, module, mask_name)
        masks.track(param, mask_name)
    return masks


class _MaskedGradient:
    """After accumulation, in place: no copy of the gradient, and one pass over it."""

    def __init__(self, module_ref, mask_name: str) -> None:
        self.module_ref, self.mask_name = module_ref, mask_name

    def __call__(self, param: torch.Tensor) -> None:
        module = self.module_ref()
        grad = param.grad
        if module is None or grad is None:
            return
        mask = module._buffers.get(self.mask_name)
        # A compact layer's dense weight has no gradient; any other shape is not ours to mask.
        if mask is not None and mask.shape == grad.shape:
            grad.masked_fill_(~mask, 0.0)
