"""Plain torch.optim optimizers on masked models: they keep training across a mode switch, and
pruned weights never move off zero without a warning.

Two global optimizer step hooks (``torch.optim.optimizer.register_optimizer_step_pre_hook`` /
``..._post_hook``), installed when sparse_tickets is imported, act on the parameters that carry
a mask (:mod:`sparse_tickets.nn.owners`) of any optimizer that is not a masked one:

- Before a step that follows a mask or mode change: a parameter whose layer switched between
  dense and compact mode (``weight`` <-> ``values``) is replaced in the param groups by the new
  trainable Parameter, with its state converted as the masked optimizers convert theirs; state
  that cannot be converted (not one entry per weight) raises, naming the parameter, rather than
  leaving the layer untrained. The state of newly pruned entries (momentum, moments) is zeroed,
  so the step cannot revive them.
- After every step: a pruned weight that is nonzero anyway (an optimizer whose update is not
  elementwise, a hook of the user's) is zeroed again, with a warning naming how many.

Other parameters, and optimizers holding none of ours, cost one dictionary lookup per parameter
after each mask change and nothing otherwise.
"""

from __future__ import annotations

import warnings

import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from ..nn import MaskedLayer, owners
from .masked_optimizer import MaskedOptimizer, convert_state

_SEEN = "_sparse_tickets_seen"  # optimizer.__dict__: the owners.changes() last checked at
_MASKED = "_sparse_tickets_masked"  # optimizer.__dict__: [(param, mask owner, mask name)]


def _before_step(optimizer, args, kwargs) -> None:
    if isinstance(optimizer, MaskedOptimizer):
        return None
    count = sum(len(group["params"]) for group in optimizer.param_groups)
    seen = optimizer.__dict__.get(_SEEN)
    if seen == (owners.changes(), count):
        return None
    masked = []
    for group in optimizer.param_groups:
        params = group["params"]
        for position, param in enumerate(params):
            owner = owners.owner_of(param)
            if owner is None:
                continue
            module, mask_name = owner
            if isinstance(module, MaskedLayer) and module.trainable_weight is not param:
                param = _follow_switch(optimizer, param, module)
                params[position] = param
            dense = not isinstance(module, MaskedLayer) or module.mode == "dense"
            if dense and mask_name in module._buffers:
                masked.append((param, module, mask_name))
    with torch.no_grad():
        for param, module, mask_name in masked:
            pruned = ~module._buffers[mask_name]
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == pruned.shape:
                    value.masked_fill_(pruned, 0)
    optimizer.__dict__[_MASKED] = masked
    optimizer.__dict__[_SEEN] = (owners.changes(), count)
    return None


def _follow_switch(optimizer, old: torch.Tensor, layer: MaskedLayer) -> torch.Tensor:
    new = layer.trainable_weight
    name = (
        f"a {layer.mode}-mode switched {type(layer).__name__} weight of shape "
        f"{tuple(layer.mask.shape)}"
    )
    state = optimizer.state.pop(old, None)
    if state:
        try:
            optimizer.state[new] = {
                key: convert_state(value, old, layer, key, name) for key, value in state.items()
            }
        except RuntimeError as error:
            optimizer.state[old] = state
            raise RuntimeError(
                f"{type(optimizer).__name__} holds {name} whose layer switched to "
                f"{layer.mode} mode and its state cannot follow ({error}); build "
                f"the optimizer after the switch, or use sparse_tickets.optim"
            ) from None
    return new


def _after_step(optimizer, args, kwargs) -> None:
    masked = optimizer.__dict__.get(_MASKED)
    if not masked or isinstance(optimizer, MaskedOptimizer):
        return
    with torch.no_grad():
        checks = []
        for param, module, mask_name in masked:
            mask = module._buffers.get(mask_name)
            if mask is not None and mask.shape == param.shape:
                checks.append((param, mask))
        if not checks:
            return
        revived = torch.stack([((param != 0) & ~mask).sum() for param, mask in checks]).sum()
        if revived.item() == 0:
            return
        for param, mask in checks:
            param.masked_fill_(~mask, 0.0)
    warnings.warn(
        f"{type(optimizer).__name__} moved {int(revived)} pruned weights off zero; "
        f"they were zeroed again (use sparse_tickets.optim's masked optimizers, whose "
        f"step keeps them at zero)",
        RuntimeWarning,
        stacklevel=3,
    )


_HOOKS = (
    register_optimizer_step_pre_hook(_before_step),
    register_optimizer_step_post_hook(_after_step),
)
