"""Which mask each optimized parameter has: the ``masks`` argument of the masked optimizers.

Three sources. None (the default): the masks of the parameters themselves, as masked layers
and maskable weights register them (:mod:`sparse_tickets.nn.owners`), so a masked optimizer is
a drop-in for its torch.optim counterpart. A model: the masked weights of that model (an error
when none of them is among the optimizer's parameters: most likely the optimizer was built on
a copy). Either way each mask is the layer's buffer, read at every step, so ``set_mask``, a new
buffer after ``model.to(device)``, or a loaded state_dict need no new optimizer. A layer in
compact mode trains ``values`` (its kept weights only), which need no mask; when a layer
switches mode, the optimizer follows it (:meth:`ParamMasks.switched`). A mapping
``{Parameter: bool tensor}``: static masks that the caller keeps up to date in place, for plain
layers; the step zeroes their pruned weights, but before the first step (and after changing a
mask) zeroing them is the caller's job, since a plain layer's forward uses whatever they hold.
Every other parameter has no mask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from ..nn import MaskedLayer, MaskedWeight, owners
from ..nn.holders import masked_weight_holders
from ..nn.weight_mask import MASK_SUFFIX

MaskSource = nn.Module | Mapping[torch.Tensor, torch.Tensor] | None


class ParamMasks:
    """The mask of each parameter, looked up when a step runs (see the module).

    Build it with :func:`resolve_masks`. Keys are Parameters by identity, as torch.optim keys
    its state.
    """

    def __init__(self, sources: dict, names: dict) -> None:
        # param -> the MaskedLayer whose ``mask`` it reads, or the static bool tensor
        self._sources = sources
        # param -> qualified name in the model; empty for a mapping, whose keys have no names
        self._names = names

    def switched(self) -> list:
        """``(old, layer)`` for each masked layer whose trainable Parameter is no longer the one
        the optimizer holds: it switched between dense and compact mode since the last step."""
        return [
            (param, source)
            for param, source in self._sources.items()
            if isinstance(source, MaskedLayer) and source.trainable_weight is not param
        ]

    def rebind(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """Follow a switch: ``new`` takes ``old``'s place and name."""
        self._sources[new] = self._sources.pop(old)
        name = self._names.pop(old, None)
        if name is not None:
            prefix, attribute = name.rpartition(".")[0], new_name(self._sources[new])
            self._names[new] = f"{prefix}.{attribute}" if prefix else attribute

    def mask_of(
        self, param: torch.Tensor, describe: Callable[[torch.Tensor], str]
    ) -> torch.Tensor | None:
        """``param``'s current mask (None when it has none), checked against ``param``;
        ``describe(param)`` names the parameter in an error (called only on one)."""
        source = self._sources.get(param)
        if source is None:
            return None
        if isinstance(source, (MaskedLayer, MaskedWeight)):
            if source.mode == "compact":
                return None  # ``values``: every entry is a kept weight
            mask = source.mask
        else:
            mask = source
        # Once per parameter per step: the cheap test first, the message only on failure.
        if not (
            isinstance(mask, torch.Tensor)
            and mask.dtype == torch.bool
            and mask.shape == param.shape
            and mask.device == param.device
        ):
            check_mask(mask, param, describe(param))
        return mask

    def name_of(self, param: torch.Tensor) -> str | None:
        """``param``'s qualified name in the model the masks came from, if known."""
        return self._names.get(param)


def resolve_masks(masks: MaskSource, param_groups: list[dict]) -> ParamMasks:
    """The :class:`ParamMasks` that ``masks`` (a model, or a mapping of Parameter to bool mask)
    describes for an optimizer over ``param_groups``; raises on anything that cannot be right."""
    if masks is None:
        return _from_owners(_params_of(param_groups))
    if isinstance(masks, nn.Module):
        return _from_model(masks, _params_of(param_groups))
    if isinstance(masks, Mapping):
        return _from_mapping(masks, param_groups)
    raise TypeError(
        f"masks must be None (the parameters' own masks), the model (an nn.Module "
        f"whose masked layers hold the masks) or a mapping {{Parameter: bool mask}}; "
        f"got {type(masks).__name__}"
    )


def check_mask(mask, param: torch.Tensor, name: str) -> None:
    """``mask`` is a bool tensor of ``param``'s shape and device; else one line naming it.

    Strict, unlike :func:`sparse_tickets.nn.validate_mask`: a 0/1 tensor would have to be
    converted to a copy, and a copy would stop following the caller's in-place updates.
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        found = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask of {name} must be a bool tensor; got {found}")
    if mask.shape != param.shape:
        raise ValueError(
            f"mask of {name} has shape {tuple(mask.shape)}; expected the "
            f"parameter's shape {tuple(param.shape)}"
        )
    if mask.device != param.device:
        raise ValueError(
            f"mask of {name} is on {mask.device}; expected the parameter's device {param.device}"
        )


def _from_owners(params: list[torch.Tensor]) -> ParamMasks:
    sources = {}
    for param in params:
        owner = owners.owner_of(param)
        if owner is None:
            continue
        module, mask_name = owner
        if isinstance(module, MaskedLayer):
            sources[param] = module
        elif mask_name in module._buffers:  # not unmasked since
            sources[param] = MaskedWeight(module, mask_name[: -len(MASK_SUFFIX)])
    return ParamMasks(sources, {})


def _from_model(model: nn.Module, params: list[torch.Tensor]) -> ParamMasks:
    sources = {}
    for name, holders in masked_weight_holders(model).items():
        first = holders[0]
        for other in holders[1:]:
            if first.mode == "dense" and not torch.equal(other.mask, first.mask):
                raise ValueError(
                    f"masks: {name} is one Parameter in several masked layers with "
                    f"different masks; expected one mask (set it on the model "
                    f"with Masks.apply_to)"
                )
        sources[first.trainable_weight] = first
    if not sources:
        raise ValueError(
            "masks: the model has no masked layers; convert it with "
            "sparse_tickets.masked(model) first, or pass masks={} to mask nothing"
        )
    if not any(param in sources for param in params):
        # Most likely the optimizer was built on a copy of the model: its pruned weights would
        # silently grow back, so this is an error rather than a plain optimizer.
        raise ValueError(
            f"masks: none of the model's {len(sources)} masked-layer weights is "
            f"among the optimizer's parameters; pass the model these parameters "
            f"belong to, or masks={{}} to mask nothing"
        )
    names = {param: name for name, param in model.named_parameters()}
    return ParamMasks(sources, names)


def _from_mapping(masks: Mapping, param_groups: list[dict]) -> ParamMasks:
    positions = {
        param: f"param_groups[{g}]['params'][{k}]"
        for g, group in enumerate(param_groups)
        for k, param in enumerate(group["params"])
    }
    sources = {}
    for param, mask in masks.items():
        if not isinstance(param, torch.Tensor):
            raise TypeError(
                f"masks keys must be the optimizer's Parameters; got "
                f"{type(param).__name__} {param!r} (to mask by layer, pass the model "
                f"itself as masks)"
            )
        if param not in positions:
            raise ValueError(
                f"masks has an entry for a tensor of shape {tuple(param.shape)} "
                f"that is not among the optimizer's parameters"
            )
        check_mask(mask, param, positions[param])
        sources[param] = mask
    return ParamMasks(sources, {})


def new_name(layer: MaskedLayer) -> str:
    """The attribute name of ``layer``'s trainable weight in its mode."""
    return "weight" if layer.mode == "dense" else "values"


def _params_of(param_groups: Iterable[dict]) -> list[torch.Tensor]:
    return [param for group in param_groups for param in group["params"]]
