"""The semi_structured backend: the masked linear's forward on 2:4 sparse tensor cores.

A 2:4 mask keeps at most 2 of every 4 consecutive weights of each row (along the input
dimension). NVIDIA's sparse tensor cores (compute capability 8.0+) multiply such a matrix, stored
as its kept half plus 2-bit indices, at up to twice the dense rate (Mishra et al., "Accelerating
Sparse Deep Neural Networks", arXiv:2104.08378, 2021). torch exposes them as
``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt, or CUTLASS where cuSPARSELt is missing
or ``SparseSemiStructuredTensor._FORCE_CUTLASS`` is set); that API is a prototype in torch, and
this backend is what keeps it behind the masked-linear contract.

What runs where:

- Forward: ``W ⊙ M`` is compressed once and cached until the weight or the mask changes (keyed
  by their identities, storages and version counters, held by weak references, so an inference
  loop compresses once, a training step, which updates the weight in place, recompresses, and a
  freed layer frees its compressed copy; a write through ``.data`` is invisible to all three:
  call :func:`clear_compressed` after one); then ``F.linear(x, W_sparse, b)``, where torch pads
  the rows of ``x`` to its kernels' multiple (8 for the half types).
- Backward: the reference's dense maths (``dx = dy (W ⊙ M)``, ``dW = (dy^T x) ⊙ M``,
  ``db = Σ dy``). 2:4 speeds the forward only: ``dx`` multiplies by ``(W ⊙ M)`` untransposed,
  whose sparse operand would have to be 2:4 along the *output* dimension, which a mask 2:4
  along the inputs is not (torch's 2:4 training compresses tile-pruned weights that are 2:4
  both ways, the transposable masks of Hubara et al., "Accelerated Sparse Neural Training: A
  Provable and Efficient Method to Find N:M Transposable Masks", NeurIPS 2021, not the masks
  magnitude pruning finds); and ``dW`` is a dense product sampled at the mask, which sparse
  tensor cores do not compute.

Served: the masked linear, CUDA, float16 and bfloat16. Not float32: in torch 2.13 the default
(cuSPARSELt) layout takes no float32, and CUTLASS's float32 kernels are 1:2, not 2:4, and run
in TF32, which would silently lower the precision of a float32 layer. The backend serves only
when forced (``SPARSE_TICKETS_BACKEND=semi_structured``) or opted in
(``SPARSE_TICKETS_OPT_IN=semi_structured``): then it takes the 2:4 half-precision layers that
fit torch's shape constraints, on sm80+, and every other layer falls through to the next backend.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..tensor_cache import TensorCache
from .base import Backend
from .reference import linear as reference_linear
from .reference.masking import apply_mask

# The pattern: at most KEPT of every GROUP consecutive inputs of a row.
GROUP, KEPT = 4, 2
MIN_CAPABILITY = (8, 0)
_PROTOTYPE_WARNING = ".*SparseSemiStructuredTensor is in prototype stage"


def is_two_four(mask: torch.Tensor) -> bool:
    """Whether ``mask`` (bool, ``(out_features, in_features)``, any device) is 2:4: at most 2
    True in each group of 4 consecutive entries of every row. A row length that is not a
    multiple of 4 is not 2:4 (torch's kernels have no partial group)."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool tensor; got {got}")
    if mask.dim() != 2:
        raise ValueError(
            f"mask must be 2-D (out_features, in_features); got shape {tuple(mask.shape)}"
        )
    rows, cols = mask.shape
    if cols % GROUP:
        return False
    if mask.numel() == 0:
        return True
    kept = mask.reshape(rows, cols // GROUP, GROUP).sum(-1, dtype=torch.uint8)
    return bool((kept <= KEPT).all())


def sparse_layout() -> type:
    """The torch subclass a weight is compressed to here: cuSPARSELt's, or CUTLASS's when
    ``SparseSemiStructuredTensor._FORCE_CUTLASS`` is set or this torch lacks cuSPARSELt."""
    sparse = torch.sparse
    if sparse.SparseSemiStructuredTensor._FORCE_CUTLASS or not _cusparselt_available():
        return sparse.SparseSemiStructuredTensorCUTLASS
    return sparse.SparseSemiStructuredTensorCUSPARSELT


def weight_shape_reasons(
    shape: Sequence[int], dtype: torch.dtype, layout: type | None = None
) -> list[str]:
    """Why torch cannot compress a weight of ``shape`` (out_features, in_features) and
    ``dtype`` to ``layout`` (default :func:`sparse_layout`): both dimensions must be positive
    multiples of the layout's minimum block (cuSPARSELt 16 x 16, CUTLASS 32 x 64 for the half
    types, in torch 2.13). Empty when it can."""
    shape = tuple(shape)
    if len(shape) != 2 or not all(isinstance(n, int) for n in shape):
        raise ValueError(f"shape must be (out_features, in_features); got {shape!r}")
    layout = layout or sparse_layout()
    name = getattr(layout, "BACKEND", layout.__name__)
    constraint = layout._DTYPE_SHAPE_CONSTRAINTS.get(dtype)
    if constraint is None:
        return [f"torch's 2:4 {name} kernels do not take {str(dtype).removeprefix('torch.')}"]
    rows, cols = shape
    min_rows, min_cols = constraint.sparse_min_rows, constraint.sparse_min_cols
    if rows < min_rows or rows % min_rows or cols < min_cols or cols % min_cols:
        return [
            f"weight {rows}x{cols} does not fit torch's 2:4 {name} kernels in "
            f"{str(dtype).removeprefix('torch.')} (out_features a positive multiple of "
            f"{min_rows}, in_features of {min_cols})"
        ]
    return []


def device_capability(device: torch.device) -> tuple | None:
    """``(major, minor)`` of a CUDA device; None for any other device."""
    if device.type != "cuda":
        return None
    return _capability(device.index if device.index is not None else torch.cuda.current_device())


def clear_compressed() -> None:
    """Forget every compressed weight: the next forward of each layer compresses again, as
    after a training step's weight update (a benchmark of training times it that way)."""
    _COMPRESSED.clear()


def clear_caches() -> None:
    """Forget every compressed weight and every 2:4 check (the next call recomputes them)."""
    clear_compressed()
    _TWO_FOUR.clear()


class SemiStructuredBackend(Backend):
    name = "semi_structured"
    device_types = frozenset({"cuda"})
    dtypes = frozenset({torch.float16, torch.bfloat16})
    auto_select = False  # opt in with SPARSE_TICKETS_OPT_IN=semi_structured (see the module)

    def unavailable_reason(self) -> str | None:
        if not hasattr(torch.sparse, "to_sparse_semi_structured"):
            return (
                "this torch has no semi-structured sparse tensors "
                "(torch.sparse.to_sparse_semi_structured)"
            )
        if not torch.cuda.is_available():
            return "no CUDA GPU"
        if torch.version.cuda is None:
            return "not a CUDA build of torch (the 2:4 kernels are cuSPARSELt and CUTLASS)"
        return None

    def not_supported_reasons(self, op: str, tensors: Sequence[torch.Tensor]) -> list[str]:
        reasons = super().not_supported_reasons(op, tensors)
        if reasons:
            return reasons
        capability = device_capability(tensors[0].device) if tensors else None
        if capability is not None and tuple(capability) < MIN_CAPABILITY:
            reasons.append(
                f"needs sparse tensor cores (compute capability 8.0+), found "
                f"{capability[0]}.{capability[1]}"
            )
        # A masked linear call passes (x, weight, mask[, bias]); fewer is a probe of the
        # device and dtype alone.
        if len(tensors) >= 3:
            reasons += _call_reasons(*tensors[:3])
        return reasons

    def masked_linear_forward(self, x, weight, mask, bias):
        # y = x @ (W ⊙ M)^T + b, W ⊙ M compressed to 2:4 (once per weight and mask version)
        sparse_weight = _COMPRESSED.get((weight, mask), lambda: _compress(weight, mask))
        return F.linear(x.contiguous(), sparse_weight, bias)

    # dx = dy @ (W ⊙ M);  dW = (dy^T @ x) ⊙ M;  db = sum_n dy  (dense: see the module)
    masked_linear_backward = staticmethod(reference_linear.masked_linear_backward)


def _call_reasons(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> list[str]:
    if weight.dim() != 2 or mask.shape != weight.shape or mask.dtype != torch.bool:
        return [
            f"expects a 2-D weight and a bool mask of its shape; got weight "
            f"{tuple(weight.shape)}, mask {mask.dtype} {tuple(mask.shape)}"
        ]
    reasons = weight_shape_reasons(tuple(weight.shape), weight.dtype)
    if x.dim() == 0 or math.prod(x.shape[:-1]) == 0:
        reasons.append("the input has no rows (torch's 2:4 matmul needs at least one)")
    if weight.shape[1] % GROUP == 0 and not _TWO_FOUR.get((mask,), lambda: is_two_four(mask)):
        reasons.append(
            "mask is not 2:4 (at most 2 kept in each group of 4 consecutive inputs of every row)"
        )
    return reasons


def _compress(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight ⊙ mask`` as torch's semi-structured sparse tensor (the mask checked 2:4)."""
    with torch.no_grad():
        dense = apply_mask(weight.detach(), mask).contiguous()
    layout = sparse_layout()
    with warnings.catch_warnings():
        # Said once per process by torch; the backend's own docs say what it rests on.
        warnings.filterwarnings("ignore", message=_PROTOTYPE_WARNING, category=UserWarning)
        if layout is not torch.sparse.SparseSemiStructuredTensorCUSPARSELT and not (
            torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS
        ):
            # No cuSPARSELt in this torch: CUTLASS, which to_sparse_semi_structured would only
            # pick under _FORCE_CUTLASS, a global we leave to the user.
            return layout.from_dense(dense)
        return torch.sparse.to_sparse_semi_structured(dense)


_COMPRESSED = TensorCache()  # (weight, mask) -> the compressed W ⊙ M
_TWO_FOUR = TensorCache()  # (mask,) -> is_two_four(mask)


@functools.cache
def _capability(index: int) -> tuple:
    return tuple(torch.cuda.get_device_capability(index))


@functools.cache
def _cusparselt_available() -> bool:
    cusparselt = getattr(torch.backends, "cusparselt", None)
    return bool(cusparselt is not None and cusparselt.is_available())
