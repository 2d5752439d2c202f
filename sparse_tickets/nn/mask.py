"""A single mask: its validation against the weight it prunes, and the full mask of a weight,
also on the meta device."""

from __future__ import annotations

import torch


def validate_mask(mask, weight: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """``mask`` as a bool tensor of ``weight``'s shape on ``weight``'s device.

    Accepts a bool tensor, or a tensor (or nested list) holding only 0 and 1. Raises ValueError
    with one line naming what was wrong and what was expected; never moves a mask across devices
    silently, since a mask on the wrong device is almost always a bug in the caller.
    """
    if not isinstance(mask, torch.Tensor):
        try:
            mask = torch.as_tensor(mask)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"{name} must be a tensor of 0/1 or bool values; got "
                f"{type(mask).__name__} ({error})"
            ) from None
        mask = mask.to(weight.device)
    if tuple(mask.shape) != tuple(weight.shape):
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)}; expected the weight's shape "
            f"{tuple(weight.shape)}"
        )
    if mask.device != weight.device:
        raise ValueError(
            f"{name} is on {mask.device}; expected the weight's device "
            f"{weight.device} (move it with .to({str(weight.device)!r}))"
        )
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise ValueError(f"{name} has complex dtype {mask.dtype}; expected bool or 0/1 values")
    if mask.is_meta:  # no values to check
        return mask != 0
    binary = (mask == 0) | (mask == 1)
    if not bool(binary.all()):
        bad = mask[~binary].flatten()[0].item()
        raise ValueError(
            f"{name} holds the value {bad!r}; expected only 0 and 1 (or a bool tensor)"
        )
    return mask != 0


def count_kept(mask: torch.Tensor, what: str) -> int:
    """The number of True entries of ``mask`` (the mask of ``what``); a one-line error on the
    meta device, which holds no values."""
    if mask.is_meta:
        raise ValueError(
            f"the mask of {what} is on the meta device, which holds no values; "
            f"expected a materialised model (model.to_empty(device=...), then "
            f"load its state_dict)"
        )
    return int(mask.sum().item())


class MetaFullMask(torch.Tensor):
    """A full (all-True) mask on the meta device, which holds no values: the mask ``masked()``
    gives a weight of a model built on meta (transformers' low-memory loading, FSDP's deferred
    init). ``module.to_empty(device=...)`` gives it storage all True rather than uninitialised
    memory, so a model materialised that way starts with nothing pruned, and a loaded state_dict
    (masks and weights) then sets what it holds. Every other op sees a plain meta tensor."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.empty_like and isinstance(args[0], MetaFullMask):
            device = kwargs.get("device")
            return full_mask_like(args[0], device=args[0].device if device is None else device)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    # Copies stay marked: a deep copy or a pickle of a meta model materialises the same way.
    def __reduce_ex__(self, protocol):
        return (_meta_full_mask, (tuple(self.shape),))

    def __deepcopy__(self, memo):
        return _meta_full_mask(tuple(self.shape))


def _meta_full_mask(shape: tuple) -> MetaFullMask:
    return torch.ones(shape, dtype=torch.bool, device="meta").as_subclass(MetaFullMask)


def full_mask_like(weight: torch.Tensor, device=None) -> torch.Tensor:
    """An all-True bool mask of ``weight``'s shape on ``weight``'s device (or ``device``); on
    the meta device a :class:`MetaFullMask`."""
    device = torch.device(weight.device if device is None else device)
    if device.type == "meta":
        return _meta_full_mask(tuple(weight.shape))
    with torch._C.DisableTorchFunctionSubclass():
        return torch.ones(weight.shape, dtype=torch.bool, device=device)


def materialised_mask(mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``mask``, or a full mask on ``weight``'s device where the mask is still on meta but the
    weight was given storage (a checkpoint holding the weights and not the masks, loaded tensor
    by tensor or with ``assign=True``): a mask on meta holds no values, so it becomes the mask
    of a freshly masked weight, a full one."""
    if mask.is_meta and not weight.is_meta:
        return full_mask_like(weight)
    return mask
