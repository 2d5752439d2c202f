"""The index of a compact weight: CSR of the mask, and of its transpose.

A weight ``W`` of shape ``(out, *rest)`` is seen as the matrix ``(R, C) = (out, prod(rest))``,
row-major (a conv weight ``(O, C, kH, kW)`` as ``(O, C*kH*kW)``, the im2col layout). Its
compact form is ``values = W[mask]`` (the kept entries in row-major order) and:

- ``row_ptr``, ``col_idx``: the CSR index of ``mask`` (int32): row ``r`` holds
  ``values[row_ptr[r]:row_ptr[r+1]]`` at columns ``col_idx[...]``. It drives the forward
  ``y = x W^T`` and the weight gradient at the nonzeros (SDDMM).
- ``t_row_ptr``, ``t_col_idx``, ``t_value_index``: the CSR index of ``mask^T``, whose entries
  point into ``values`` (``t_value_index``) rather than holding a reordered copy: the values
  change at every step, the index only with the mask. It drives the input gradient ``dx = dy W``.

int32 indices halve the index bytes each kernel reads; a mask with 2**31 or more kept entries
is refused.

A conv weight's index also carries its :class:`~.conv_plan.ConvPlan`: which vectorisation of
the direct sparse convolution serves each input shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .conv_plan import ConvPlan

_MAX_NNZ = 2**31 - 1

INDEX_FIELDS = ("row_ptr", "col_idx", "t_row_ptr", "t_col_idx", "t_value_index")


@dataclass(frozen=True)
class CompactIndex:
    """CSR of a mask and of its transpose (see the module); tensors on the mask's device."""

    shape: tuple  # the weight's own shape, e.g. (O, C, kH, kW)
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    t_row_ptr: torch.Tensor
    t_col_idx: torch.Tensor
    t_value_index: torch.Tensor
    # A conv weight's vectorisation, chosen once per input shape (see .conv_plan).
    conv_plan: ConvPlan = field(default_factory=ConvPlan, compare=False, repr=False)

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> CompactIndex:
        """The index of a bool ``mask`` (the weight's shape, at least 1-D)."""
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() < 1:
            got = (
                f"{mask.dtype} of shape {tuple(mask.shape)}"
                if isinstance(mask, torch.Tensor)
                else type(mask).__name__
            )
            raise ValueError(
                f"a compact index needs a bool mask of at least one dimension; got {got}"
            )
        rows, cols = matrix_shape(mask.shape)
        matrix = mask.reshape(rows, cols)
        nnz = int(matrix.sum().item())
        if nnz > _MAX_NNZ:
            raise ValueError(
                f"the mask keeps {nnz} entries; the compact index holds at most {_MAX_NNZ} (int32)"
            )
        row_ptr, col_idx = _csr(matrix)
        # Position of each kept entry in ``values`` (row-major order), read in transposed order.
        position = torch.full((rows, cols), -1, dtype=torch.int32, device=mask.device)
        position[matrix] = torch.arange(nnz, dtype=torch.int32, device=mask.device)
        transposed = matrix.t()
        t_row_ptr, t_col_idx = _csr(transposed)
        t_value_index = position.t()[transposed]
        return cls(tuple(mask.shape), row_ptr, col_idx, t_row_ptr, t_col_idx, t_value_index)

    @classmethod
    def from_tensors(cls, shape: tuple, tensors: dict) -> CompactIndex:
        return cls(tuple(shape), *(tensors[name] for name in INDEX_FIELDS))

    def tensors(self) -> dict:
        """The index tensors by field name (what a layer keeps as buffers)."""
        return {name: getattr(self, name) for name in INDEX_FIELDS}

    @property
    def rows(self) -> int:
        return self.row_ptr.shape[0] - 1

    @property
    def cols(self) -> int:
        return self.t_row_ptr.shape[0] - 1

    @property
    def nnz(self) -> int:
        return self.col_idx.shape[0]

    @property
    def density(self) -> float:
        return self.nnz / max(self.rows * self.cols, 1)

    @property
    def device(self) -> torch.device:
        return self.row_ptr.device

    def mask(self) -> torch.Tensor:
        """The bool mask this index describes, in the weight's shape."""
        mask = torch.zeros(self.rows * self.cols, dtype=torch.bool, device=self.device)
        mask[self._flat_positions()] = True
        return mask.reshape(self.shape)

    def to_dense(self, values: torch.Tensor) -> torch.Tensor:
        """The dense weight (the ``shape`` given at construction) holding ``values`` at the kept
        positions and exactly 0.0 elsewhere; differentiable with respect to ``values``."""
        self.check_values(values)
        dense = values.new_zeros(self.rows * self.cols)
        dense = dense.index_put((self._flat_positions(),), values)
        return dense.reshape(self.shape)

    def gather(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight``'s kept entries in ``values`` order (``weight[mask]``), a new tensor."""
        if tuple(weight.shape) != self.shape:
            raise ValueError(
                f"weight has shape {tuple(weight.shape)}; expected the index's shape {self.shape}"
            )
        return weight.reshape(-1)[self._flat_positions()]

    def check_values(self, values: torch.Tensor) -> None:
        if values.dim() != 1 or values.shape[0] != self.nnz:
            raise ValueError(
                f"values has shape {tuple(values.shape)}; expected ({self.nnz},), "
                f"one per kept entry of the {self.shape} mask"
            )

    def _flat_positions(self) -> torch.Tensor:
        # Row of each nonzero from the CSR row pointers; row-major flat index = row * C + col.
        counts = (self.row_ptr[1:] - self.row_ptr[:-1]).long()
        rows = torch.repeat_interleave(
            torch.arange(self.rows, device=self.device), counts, output_size=self.nnz
        )
        return rows * self.cols + self.col_idx.long()


def matrix_shape(shape) -> tuple:
    """``(R, C)``: a weight's shape as the matrix its kernels see (out x everything else)."""
    shape = tuple(shape)
    return shape[0], math.prod(shape[1:])


def _csr(matrix: torch.Tensor) -> tuple:
    rows = matrix.shape[0]
    counts = matrix.sum(dim=1, dtype=torch.int64)
    row_ptr = torch.zeros(rows + 1, dtype=torch.int64, device=matrix.device)
    torch.cumsum(counts, dim=0, out=row_ptr[1:])
    col_idx = matrix.nonzero()[:, 1]  # row-major order, so sorted within each row
    return row_ptr.to(torch.int32), col_idx.to(torch.int32)
