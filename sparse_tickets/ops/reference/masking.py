"""Zeroing pruned entries exactly and fast.

A pruned entry must become +0.0 whatever it held (a negative number, inf, NaN), so ``x * mask``
will not do (it leaves -0.0 and NaN); ``torch.where`` and ``masked_fill`` are exact but run a
branch per element, which on CPU is several times slower on a random mask than on a full one.
An AND of the bit patterns with all-ones (kept) or all-zeros (pruned) is exact and vectorises.

A layer's mask changes once per pruning level but is read at every call, so what is derived
from it (whether it keeps everything, its AND pattern) is cached per mask tensor, storage and
version (:func:`mask_facts`, a :class:`~sparse_tickets.tensor_cache.TensorCache`): an in-place
change of the mask bumps its version and is seen at the next call.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from ...tensor_cache import TensorCache, versions_of

# Each float dtype viewed as the integer of its width, for the bitwise AND.
_SAME_WIDTH_INT = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


class MaskFacts(NamedTuple):
    """What a mask's version implies: ``full`` (it keeps every entry) and the AND patterns
    made of it so far, by integer dtype."""

    full: bool
    keep_bits: dict


# (mask,) -> its MaskFacts; an entry dies with its mask.
_FACTS = TensorCache()


def mask_facts(mask: torch.Tensor) -> MaskFacts | None:
    """The cached facts of ``mask`` at its current version, or None where a mask has no
    version to key them on (inside a compiled graph, an inference tensor, the meta device)."""
    if torch.compiler.is_compiling() or mask.is_meta or versions_of((mask,)) is None:
        return None
    return _FACTS.get((mask,), lambda: MaskFacts(bool(mask.all()), {}))


def is_full(mask: torch.Tensor) -> bool:
    """Whether ``mask`` keeps every entry (False where that cannot be known without a sync)."""
    facts = mask_facts(mask)
    return facts is not None and facts.full


def _keep_bits(mask: torch.Tensor, int_dtype: torch.dtype) -> torch.Tensor:
    # True -> 1 -> -1 (all bits set); False -> 0 (no bits set).
    facts = mask_facts(mask)
    if facts is None:
        return mask.to(int_dtype).neg_()
    bits = facts.keep_bits.get(int_dtype)
    if bits is None:
        bits = facts.keep_bits[int_dtype] = mask.to(int_dtype).neg_()
    return bits


def apply_mask(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``tensor ⊙ mask`` as a new tensor, every pruned entry exactly +0.0."""
    int_dtype = _SAME_WIDTH_INT.get(tensor.dtype)
    if int_dtype is None:
        return torch.where(mask, tensor, tensor.new_zeros(()))
    return tensor.view(int_dtype).bitwise_and(_keep_bits(mask, int_dtype)).view(tensor.dtype)


def zero_pruned_(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Set every entry of ``tensor`` where ``mask`` is False to exactly +0.0, in place."""
    int_dtype = _SAME_WIDTH_INT.get(tensor.dtype)
    if int_dtype is None:
        return tensor.masked_fill_(~mask, 0)
    tensor.view(int_dtype).bitwise_and_(_keep_bits(mask, int_dtype))
    return tensor


class _MaskedWeight(torch.autograd.Function):
    """``weight ⊙ mask`` with the gradient masked the same way: exact (+0.0 where pruned)."""

    @staticmethod
    def forward(ctx, weight, mask):
        ctx.save_for_backward(mask)
        return apply_mask(weight, mask)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return apply_mask(grad, mask), None


def masked_weight(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight ⊙ mask`` for a forward, differentiable: the gradient that flows back into
    ``weight`` is exactly 0.0 where ``mask`` is False. A mask that keeps everything gives
    ``weight`` itself, so the op it feeds is torch's own, at no cost."""
    if is_full(mask):
        return weight
    return _MaskedWeight.apply(weight, mask)
