"""Masked linear as Triton kernels: forward, input gradient and weight gradient.

With ``x`` of shape (M, K), a weight ``W`` and its mask of shape (N, K) and ``dy`` of shape (M, N):

    forward          y  = x @ (W ⊙ mask)^T + b
    input gradient   dx = dy @ (W ⊙ mask)
    weight gradient  dW = (dy^T @ x) ⊙ mask

The mask is applied while a tile of ``W`` is loaded (``W ⊙ mask`` is never written to memory)
and in the epilogue of the weight gradient, where whole tiles whose mask block is empty skip
their reduction and store zeros. Pruned entries become exactly +0.0 through a select, never a
multiply, so a pruned weight holding inf or NaN cannot leak. Every kernel accumulates in fp32.

Sizes are limited by memory only. Offsets are int64: every tile index and loop start is
widened before it meets a stride (triton passes sizes and strides below 2^31 as int32, so int32
arithmetic would wrap once an index times a stride passed 2^31, with every size in range: an
output of 65,536 x 50,304, a large im2col buffer). Each grid is 1-D, its tiles in the order a
2-D grid's x axis runs them: CUDA allows only 65,535 programs along y, which capped the
features at about 2M.

The mask is read as int8: a bool tensor is already one byte per entry, so viewing it as int8 is
free and moves no more bytes than the mask itself (a bitmask would move 8x fewer; a later
option). Launchers take bool or uint8 masks. No autograd here: see sparse_tickets.ops.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .interpreter import interpreting
from .occupancy import cached_block_occupancy

# Tile of the weight gradient, fixed rather than tuned: the occupancy table is built per tile.
_INTERPRETER_BLOCK = 16
_WEIGHT_GRAD_BLOCK_GPU = (64, 64)
# Pinned so fp32 results do not change with triton's default (tf32 on recent GPUs); 16-bit
# products are exact in fp32 either way, so "ieee" costs them nothing.
_INPUT_PRECISION = "ieee"


def _matmul_configs() -> list:
    """Tiles to try for the forward and input-gradient kernels.

    Under the interpreter one small tile: autotuning there would time every config in Python
    for nothing (its timings mean nothing), and a 16 tile keeps boundary tests small.
    """
    if interpreting():
        block = _INTERPRETER_BLOCK
        return [
            triton.Config(
                {"BLOCK_M": block, "BLOCK_N": block, "BLOCK_K": block}, num_warps=1, num_stages=1
            )
        ]
    return [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    ]


def _weight_grad_configs() -> list:
    """Reduction tiles to try for the weight gradient (its output tile is fixed)."""
    if interpreting():
        return [triton.Config({"BLOCK_M": _INTERPRETER_BLOCK}, num_warps=1, num_stages=1)]
    return [
        triton.Config({"BLOCK_M": 32}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_M": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64}, num_warps=8, num_stages=4),
    ]


def weight_grad_block() -> tuple:
    """The (rows, cols) output tile of the weight gradient: the granularity of tile skipping."""
    if interpreting():
        return (_INTERPRETER_BLOCK, _INTERPRETER_BLOCK)
    return _WEIGHT_GRAD_BLOCK_GPU


@triton.jit
def _tile_coordinates(tiles_along_rows):
    """This program's (row tile, column tile) on a 1-D grid, row tiles fastest."""
    # int32 division (the grid holds under 2^31 programs); _tile_offsets widens the result.
    program = tl.program_id(0)
    return program % tiles_along_rows, program // tiles_along_rows


@triton.jit
def _tile_offsets(tile, BLOCK: tl.constexpr):
    """The indices of ``tile`` along one dimension, as int64."""
    return _offsets_from(tile.to(tl.int64) * BLOCK, BLOCK)


@triton.jit
def _offsets_from(start, BLOCK: tl.constexpr):
    """``start + [0, BLOCK)`` as int64, so that index * stride cannot wrap at 2^31."""
    # int64 + the int32 (or Python int) start promotes to int64 before any stride multiplies.
    return tl.arange(0, BLOCK).to(tl.int64) + start


@triton.autotune(configs=_matmul_configs(), key=["M", "N", "K"])
@triton.jit
def _masked_linear_fwd_kernel(
    x_ptr,
    w_ptr,
    mask_ptr,
    bias_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_mn,
    stride_mk,
    stride_b,
    stride_ym,
    stride_yn,
    HAS_BIAS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # y[m, n] = sum_k x[m, k] * (mask[n, k] ? W[n, k] : 0) + b[n]
    tile_m, tile_n = _tile_coordinates(tl.cdiv(M, BLOCK_M))
    offs_m = _tile_offsets(tile_m, BLOCK_M)
    offs_n = _tile_offsets(tile_n, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_start in range(0, K, BLOCK_K):
        offs_k = _offsets_from(k_start, BLOCK_K)
        x_in = (offs_m[:, None] < M) & (offs_k[None, :] < K)
        x = tl.load(
            x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk, mask=x_in, other=0.0
        )
        # W^T tile (BLOCK_K, BLOCK_N); out-of-range entries load as pruned zeros.
        w_in = (offs_k[:, None] < K) & (offs_n[None, :] < N)
        w = tl.load(
            w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn, mask=w_in, other=0.0
        )
        keep = tl.load(
            mask_ptr + offs_k[:, None] * stride_mk + offs_n[None, :] * stride_mn, mask=w_in, other=0
        )
        w = tl.where(keep != 0, w, 0.0)
        acc = tl.dot(x, w, acc, input_precision=INPUT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n * stride_b, mask=offs_n < N, other=0.0).to(tl.float32)[
            None, :
        ]
    y_in = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(
        y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
        acc.to(y_ptr.dtype.element_ty),
        mask=y_in,
    )


@triton.autotune(configs=_matmul_configs(), key=["M", "N", "K"])
@triton.jit
def _masked_linear_input_grad_kernel(
    dy_ptr,
    w_ptr,
    mask_ptr,
    dx_ptr,
    M,
    N,
    K,
    stride_dym,
    stride_dyn,
    stride_wn,
    stride_wk,
    stride_mn,
    stride_mk,
    stride_dxm,
    stride_dxk,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # dx[m, k] = sum_n dy[m, n] * (mask[n, k] ? W[n, k] : 0)
    tile_m, tile_k = _tile_coordinates(tl.cdiv(M, BLOCK_M))
    offs_m = _tile_offsets(tile_m, BLOCK_M)
    offs_k = _tile_offsets(tile_k, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n_start in range(0, N, BLOCK_N):
        offs_n = _offsets_from(n_start, BLOCK_N)
        dy_in = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        dy = tl.load(
            dy_ptr + offs_m[:, None] * stride_dym + offs_n[None, :] * stride_dyn,
            mask=dy_in,
            other=0.0,
        )
        w_in = (offs_n[:, None] < N) & (offs_k[None, :] < K)
        w = tl.load(
            w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk, mask=w_in, other=0.0
        )
        keep = tl.load(
            mask_ptr + offs_n[:, None] * stride_mn + offs_k[None, :] * stride_mk, mask=w_in, other=0
        )
        w = tl.where(keep != 0, w, 0.0)
        acc = tl.dot(dy, w, acc, input_precision=INPUT_PRECISION)
    dx_in = (offs_m[:, None] < M) & (offs_k[None, :] < K)
    tl.store(
        dx_ptr + offs_m[:, None] * stride_dxm + offs_k[None, :] * stride_dxk,
        acc.to(dx_ptr.dtype.element_ty),
        mask=dx_in,
    )


@triton.autotune(configs=_weight_grad_configs(), key=["M", "N", "K"])
@triton.jit
def _masked_linear_weight_grad_kernel(
    dy_ptr,
    x_ptr,
    mask_ptr,
    occupancy_ptr,
    dw_ptr,
    M,
    N,
    K,
    stride_dym,
    stride_dyn,
    stride_xm,
    stride_xk,
    stride_mn,
    stride_mk,
    stride_dwn,
    stride_dwk,
    occupancy_cols,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # dW[n, k] = mask[n, k] ? sum_m dy[m, n] * x[m, k] : 0
    tile_n, tile_k = _tile_coordinates(tl.cdiv(N, BLOCK_N))
    offs_n = _tile_offsets(tile_n, BLOCK_N)
    offs_k = _tile_offsets(tile_k, BLOCK_K)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    # A tile whose mask block is all False would be zeroed by the epilogue anyway: skip its
    # reduction over the batch, the whole cost of the tile.
    if tl.load(occupancy_ptr + tile_n * occupancy_cols + tile_k) != 0:
        for m_start in range(0, M, BLOCK_M):
            offs_m = _offsets_from(m_start, BLOCK_M)
            # dy^T tile (BLOCK_N, BLOCK_M), read through strides rather than transposed.
            dy_in = (offs_n[:, None] < N) & (offs_m[None, :] < M)
            dy_t = tl.load(
                dy_ptr + offs_n[:, None] * stride_dyn + offs_m[None, :] * stride_dym,
                mask=dy_in,
                other=0.0,
            )
            x_in = (offs_m[:, None] < M) & (offs_k[None, :] < K)
            x = tl.load(
                x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                mask=x_in,
                other=0.0,
            )
            acc = tl.dot(dy_t, x, acc, input_precision=INPUT_PRECISION)
    dw_in = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    keep = tl.load(
        mask_ptr + offs_n[:, None] * stride_mn + offs_k[None, :] * stride_mk, mask=dw_in, other=0
    )
    acc = tl.where(keep != 0, acc, 0.0)
    tl.store(
        dw_ptr + offs_n[:, None] * stride_dwn + offs_k[None, :] * stride_dwk,
        acc.to(dw_ptr.dtype.element_ty),
        mask=dw_in,
    )


def masked_linear_forward(
    x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ (weight ⊙ mask)^T + bias`` for ``x`` (M, K), ``weight`` and ``mask`` (N, K)."""
    _check_operands(x=x, weight=weight)
    (M, K), N = x.shape, weight.shape[0]
    _check_shape("x", x, (M, weight.shape[1]))
    _check_mask(mask, weight)
    if bias is not None:
        _check_operands(x=x, bias=bias)
        _check_shape("bias", bias, (N,))
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    if y.numel() == 0:
        return y
    keep = _mask_as_int8(mask)
    grid = _tile_grid(M, N, "BLOCK_M", "BLOCK_N")
    _masked_linear_fwd_kernel[grid](
        x,
        weight,
        keep,
        bias if bias is not None else y,
        y,
        M,
        N,
        K,
        x.stride(0),
        x.stride(1),
        weight.stride(0),
        weight.stride(1),
        keep.stride(0),
        keep.stride(1),
        bias.stride(0) if bias is not None else 0,
        y.stride(0),
        y.stride(1),
        HAS_BIAS=bias is not None,
        INPUT_PRECISION=_INPUT_PRECISION,
    )
    return y


def masked_linear_input_grad(
    grad_y: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``grad_y @ (weight ⊙ mask)`` for ``grad_y`` (M, N), ``weight`` and ``mask`` (N, K)."""
    _check_operands(grad_y=grad_y, weight=weight)
    (M, N), K = grad_y.shape, weight.shape[1]
    _check_shape("grad_y", grad_y, (M, weight.shape[0]))
    _check_mask(mask, weight)
    grad_x = torch.empty((M, K), device=grad_y.device, dtype=grad_y.dtype)
    if grad_x.numel() == 0:
        return grad_x
    keep = _mask_as_int8(mask)
    grid = _tile_grid(M, K, "BLOCK_M", "BLOCK_K")
    _masked_linear_input_grad_kernel[grid](
        grad_y,
        weight,
        keep,
        grad_x,
        M,
        N,
        K,
        grad_y.stride(0),
        grad_y.stride(1),
        weight.stride(0),
        weight.stride(1),
        keep.stride(0),
        keep.stride(1),
        grad_x.stride(0),
        grad_x.stride(1),
        INPUT_PRECISION=_INPUT_PRECISION,
    )
    return grad_x


def masked_linear_weight_grad(
    grad_y: torch.Tensor, x: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``(grad_y^T @ x) ⊙ mask`` for ``grad_y`` (M, N), ``x`` (M, K) and ``mask`` (N, K).

    Output tiles whose mask block is all False (see :func:`weight_grad_block`) skip their
    reduction and store zeros; the block table is cached per mask until it changes in place.
    """
    _check_operands(grad_y=grad_y, x=x)
    (M, N), K = grad_y.shape, x.shape[1]
    _check_shape("x", x, (M, K))
    grad_weight = torch.empty((N, K), device=x.device, dtype=x.dtype)
    _check_mask(mask, grad_weight)
    if grad_weight.numel() == 0:
        return grad_weight
    block_n, block_k = weight_grad_block()
    occupancy = cached_block_occupancy(mask, block_n, block_k)
    keep = _mask_as_int8(mask)
    grid = (occupancy.numel(),)
    _masked_linear_weight_grad_kernel[grid](
        grad_y,
        x,
        keep,
        occupancy,
        grad_weight,
        M,
        N,
        K,
        grad_y.stride(0),
        grad_y.stride(1),
        x.stride(0),
        x.stride(1),
        keep.stride(0),
        keep.stride(1),
        grad_weight.stride(0),
        grad_weight.stride(1),
        occupancy.stride(0),
        INPUT_PRECISION=_INPUT_PRECISION,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
    )
    return grad_weight


def _tile_grid(rows: int, cols: int, row_block: str, col_block: str):
    """The 1-D grid of one program per output tile, for the tile the autotuner picks."""
    return lambda meta: (triton.cdiv(rows, meta[row_block]) * triton.cdiv(cols, meta[col_block]),)


def _mask_as_int8(mask: torch.Tensor) -> torch.Tensor:
    # Same bytes, reinterpreted: no copy, and the kernels test ``!= 0``.
    return mask.view(torch.int8)


def _check_operands(**operands: torch.Tensor) -> None:
    """Each operand a 2-D (bias: 1-D) tensor, all of one dtype on one device."""
    (first_name, first), *others = operands.items()
    for name, tensor in operands.items():
        dims = 1 if name == "bias" else 2
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != dims:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must be a {dims}-D tensor; got {got}")
    for name, tensor in others:
        if tensor.device != first.device or tensor.dtype != first.dtype:
            raise ValueError(
                f"{name} is {tensor.dtype} on {tensor.device}; expected "
                f"{first_name}'s {first.dtype} on {first.device}"
            )


def _check_shape(name: str, tensor: torch.Tensor, shape: tuple) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected {tuple(shape)}")


def _check_mask(mask: torch.Tensor, like: torch.Tensor) -> None:
    """``mask`` bool or uint8, of ``like``'s shape and device (``like``: the weight)."""
    if not isinstance(mask, torch.Tensor) or mask.dtype not in (torch.bool, torch.uint8):
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool or uint8 tensor; got {got}")
    if mask.shape != like.shape or mask.device != like.device:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} on {mask.device}; expected "
            f"{tuple(like.shape)} on {like.device}"
        )
