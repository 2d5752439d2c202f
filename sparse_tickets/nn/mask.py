"""Validation of a single mask against the weight it prunes."""

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
            raise ValueError(f"{name} must be a tensor of 0/1 or bool values; got "
                             f"{type(mask).__name__} ({error})") from None
        mask = mask.to(weight.device)
    if tuple(mask.shape) != tuple(weight.shape):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}; expected the weight's shape "
                         f"{tuple(weight.shape)}")
    if mask.device != weight.device:
        raise ValueError(f"{name} is on {mask.device}; expected the weight's device "
                         f"{weight.device} (move it with .to({str(weight.device)!r}))")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise ValueError(f"{name} has complex dtype {mask.dtype}; expected bool or 0/1 values")
    binary = (mask == 0) | (mask == 1)
    if not bool(binary.all()):
        bad = mask[~binary].flatten()[0].item()
        raise ValueError(f"{name} holds the value {bad!r}; expected only 0 and 1 (or a bool "
                         f"tensor)")
    return mask != 0
