"""Which blocks of a mask hold any kept entry, cached per mask until the mask changes.

The weight-gradient kernel reads one flag per output tile and skips the reduction of a tile
whose mask block is all False. The table is plain torch (no triton) and costs one pass over the
mask, so it is built once per mask change (once per pruning level) rather than once per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparse_tickets.tensor_cache import TensorCache

# (mask,) and the block sizes -> the table
_CACHE = TensorCache()


def block_occupancy(mask: torch.Tensor, block_rows: int, block_cols: int) -> torch.Tensor:
    """An int8 table of shape ``(ceil(rows / block_rows), ceil(cols / block_cols))``: 1 where the
    matching block of the 2-D ``mask`` holds a nonzero entry, 0 where the block is all zero."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be 2-D; got shape {tuple(mask.shape)}")
    if block_rows < 1 or block_cols < 1:
        raise ValueError(f"block sizes must be positive; got ({block_rows}, {block_cols})")
    rows, cols = mask.shape
    row_blocks, col_blocks = -(-rows // block_rows), -(-cols // block_cols)
    # Pad with zeros (empty) to whole blocks, then one reduction per block.
    padded = F.pad(
        mask.to(torch.uint8), (0, col_blocks * block_cols - cols, 0, row_blocks * block_rows - rows)
    )
    blocks = padded.view(row_blocks, block_rows, col_blocks, block_cols)
    return blocks.amax(dim=(1, 3)).to(torch.int8)


def cached_block_occupancy(mask: torch.Tensor, block_rows: int, block_cols: int) -> torch.Tensor:
    """:func:`block_occupancy`, rebuilt only when ``mask`` is a new tensor or changed in place.

    Kept per mask tensor, storage and version (bumped by every in-place write, ``copy_`` in
    ``set_mask`` and ``load_state_dict`` included), and dropped with the mask: see
    :mod:`sparse_tickets.tensor_cache`.
    """
    return _CACHE.get(
        (mask,), lambda: block_occupancy(mask, block_rows, block_cols), key=(block_rows, block_cols)
    )


def clear_occupancy_cache() -> None:
    """Forget every cached table (they are rebuilt on next use)."""
    _CACHE.clear()
