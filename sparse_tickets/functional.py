"""Masked linear and conv2d as autograd Functions.

Both compute with ``weight ⊙ mask`` without requiring the caller to have zeroed the weight, and
both return a gradient for ``weight`` that is exactly 0.0 wherever ``mask`` is False, so an
optimizer never sees a signal for a pruned weight. The implementation is chosen once per call by
:func:`sparse_tickets.ops.select`; the backward runs on the backend the forward ran on.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import ops
from .conv_geometry import output_size
from .formats import CompactIndex
from .formats.conv_plan import check_variant
from .ops import compiled

IntPair = int | tuple


def masked_linear(
    x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ (weight ⊙ mask)^T + bias``, like ``F.linear`` on the masked weight.

    Args:
        x: input of shape ``(*, in_features)``.
        weight: ``(out_features, in_features)``.
        mask: bool tensor of the weight's shape, on its device; False marks a pruned weight.
        bias: optional ``(out_features,)``.

    Gradients: ``grad_weight`` is exactly 0.0 where ``mask`` is False; ``grad_x`` is computed
    with the masked weight; ``grad_bias`` is the usual sum over the batch. First derivatives
    only: the backward is not itself differentiable (no double backward).

    Under ``torch.autocast`` the op runs in the autocast dtype, as ``F.linear`` does.
    """
    x, weight, bias = _autocast_inputs(x, weight, bias)
    _check_mask(mask, weight)
    if weight.dim() != 2:
        raise ValueError(
            f"weight must be 2-D (out_features, in_features); got shape {tuple(weight.shape)}"
        )
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"input has shape {tuple(x.shape)}; expected (*, {weight.shape[1]}) "
            f"to match weight {tuple(weight.shape)}"
        )
    _check_bias(bias, weight)
    _check_dtypes(x, weight, bias)
    backend = ops.select("masked_linear", (x, weight, mask, bias))
    with _autocast_off(x):
        if backend.masked_linear_autograd is not None and not torch.compiler.is_compiling():
            return backend.masked_linear_autograd(x, weight, mask, bias)
        return MaskedLinearFunction.apply(x, weight, mask, bias, backend)


def masked_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``conv2d(x, weight ⊙ mask, bias, ...)``, with the arguments of ``F.conv2d``.

    ``padding`` may be an int, a pair, ``"valid"`` or ``"same"`` (an uneven "same" padding pads
    the extra row/column at the bottom/right, as torch does). ``x`` is ``(N, C, H, W)`` or
    unbatched ``(C, H, W)``.

    Gradients: ``grad_weight`` is exactly 0.0 where ``mask`` is False; ``grad_x`` is computed
    with the masked weight; ``grad_bias`` is the usual sum. First derivatives only (no double
    backward). Under ``torch.autocast`` the op runs in the autocast dtype, as ``F.conv2d`` does.
    """
    x, weight, bias = _autocast_inputs(x, weight, bias)
    _check_mask(mask, weight)
    if weight.dim() != 4:
        raise ValueError(
            f"weight must be 4-D (out_channels, in_channels/groups, kH, kW); got "
            f"shape {tuple(weight.shape)}"
        )
    _check_bias(bias, weight)
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(
            f"stride and dilation must be positive; got stride={stride}, dilation={dilation}"
        )
    if not isinstance(groups, int) or groups < 1 or weight.shape[0] % groups:
        raise ValueError(
            f"groups={groups!r} must be a positive int dividing out_channels={weight.shape[0]}"
        )
    if padding == "same" and stride != (1, 1):
        raise ValueError(f"padding='same' needs stride 1; got stride={stride}")
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != weight.shape[1] * groups:
        channels = weight.shape[1] * groups
        raise ValueError(
            f"input has shape {tuple(x.shape)}; expected (N, {channels}, H, W) "
            f"for weight {tuple(weight.shape)} with groups={groups}"
        )
    _check_dtypes(x, weight, bias)
    x, padding = _resolve_padding(x, padding, weight.shape[2:], dilation)
    backend = ops.select("masked_conv2d", (x, weight, mask, bias))
    with _autocast_off(x):
        if backend.masked_conv2d_autograd is not None and not torch.compiler.is_compiling():
            y = backend.masked_conv2d_autograd(
                x, weight, mask, bias, stride, padding, dilation, groups
            )
        else:
            y = MaskedConv2dFunction.apply(
                x, weight, mask, bias, stride, padding, dilation, groups, backend
            )
    return y.squeeze(0) if unbatched else y


class MaskedLinearFunction(torch.autograd.Function):
    """Autograd for :func:`masked_linear`; the kernels live in ``backend``, which the caller
    selected for this call and the backward reuses."""

    @staticmethod
    def forward(ctx, x, weight, mask, bias, backend):
        # Not reshape(-1, in_features): that fails for in_features == 0, which nn.Linear allows.
        x2d = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
        y = backend.masked_linear_forward(x2d, weight, mask, bias)
        ctx.backend = backend
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x2d, weight, mask)
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x2d, weight, mask = ctx.saved_tensors
        needs_x, needs_weight, _, needs_bias = ctx.needs_input_grad[:4]
        grad_x, grad_weight, grad_bias = ctx.backend.masked_linear_backward(
            grad_y.reshape(x2d.shape[0], weight.shape[0]),
            x2d,
            weight,
            mask,
            ctx.has_bias,
            (needs_x, needs_weight, needs_bias),
        )
        if grad_x is not None:
            grad_x = grad_x.reshape(*grad_y.shape[:-1], weight.shape[1])
        return grad_x, grad_weight, None, grad_bias, None


class MaskedConv2dFunction(torch.autograd.Function):
    """Autograd for :func:`masked_conv2d`; the kernels live in ``backend``, which the caller
    selected for this call and the backward reuses."""

    @staticmethod
    def forward(ctx, x, weight, mask, bias, stride, padding, dilation, groups, backend):
        geometry = (stride, padding, dilation, groups)
        y = backend.masked_conv2d_forward(x, weight, mask, bias, *geometry)
        ctx.backend = backend
        ctx.has_bias = bias is not None
        ctx.geometry = geometry
        ctx.save_for_backward(x, weight, mask)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, mask = ctx.saved_tensors
        needs_x, needs_weight, _, needs_bias = ctx.needs_input_grad[:4]
        grad_x, grad_weight, grad_bias = ctx.backend.masked_conv2d_backward(
            grad_y,
            x,
            weight,
            mask,
            ctx.has_bias,
            (needs_x, needs_weight, needs_bias),
            *ctx.geometry,
        )
        return grad_x, grad_weight, None, grad_bias, None, None, None, None, None


def compact_linear(
    x: torch.Tensor, values: torch.Tensor, index: CompactIndex, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ W^T + bias`` for the compact weight ``W`` (``values`` at ``index``'s kept entries).

    The same result as :func:`masked_linear` on the dense weight ``index.to_dense(values)``,
    at a cost that falls with the density on the compiled backends: the forward and the input
    gradient are sparse-dense products over the index, and the gradient of ``values`` is
    computed only at the kept entries. ``values`` is ``(nnz,)``; ``index`` is a
    :class:`~sparse_tickets.compact.CompactIndex` of an ``(out_features, in_features)`` mask.
    First derivatives only. Under ``torch.autocast`` the op runs in the autocast dtype.
    """
    x, values, bias = _autocast_inputs(x, values, bias)
    _check_compact(values, index, bias, dims=2)
    if x.dim() == 0 or x.shape[-1] != index.cols:
        raise ValueError(
            f"input has shape {tuple(x.shape)}; expected (*, {index.cols}) to "
            f"match the compact weight {index.shape}"
        )
    _check_dtypes(x, values, bias)
    if torch.compiler.is_compiling():  # one opaque op per call: no dispatch inside the graph
        return compiled.compact_linear(x, values, index, bias)
    backend = ops.select("compact_linear", (x, values, bias))
    with _autocast_off(x):
        if backend.compact_linear_autograd is not None:
            x2d = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
            y = backend.compact_linear_autograd(x2d, values, index, bias)
            return y.reshape(*x.shape[:-1], index.rows)
        return CompactLinearFunction.apply(x, values, index, bias, backend)


def compact_conv2d(
    x: torch.Tensor,
    values: torch.Tensor,
    index: CompactIndex,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    variant: str | None = None,
) -> torch.Tensor:
    """``conv2d(x, W, bias, ...)`` for the compact weight ``W`` of shape
    ``(O, C / groups, kH, kW)``, with the arguments of ``F.conv2d``.

    On the CPU backend a direct sparse convolution whose cost falls with the density: each kept
    weight adds a shifted window of its input channel to its output channel, vectorised over the
    batch or over the output width, and the gradient of ``values`` is computed only at the kept
    weights. ``variant`` forces one form ("batch", "width", or "im2col": the input unfolded
    around the compact linear kernels, groups=1 only); None takes the one
    ``index.conv_plan`` chose for this input shape (:mod:`sparse_tickets.formats.conv_plan`).
    The reference backend computes every variant with ``F.conv2d`` on the dense weight.
    """
    x, values, bias = _autocast_inputs(x, values, bias)
    _check_compact(values, index, bias, dims=4)
    variant = check_variant(variant)
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(
            f"stride and dilation must be positive; got stride={stride}, dilation={dilation}"
        )
    if not isinstance(groups, int) or groups < 1 or index.rows % groups:
        raise ValueError(
            f"groups={groups!r} must be a positive int dividing out_channels={index.rows}"
        )
    if padding == "same" and stride != (1, 1):
        raise ValueError(f"padding='same' needs stride 1; got stride={stride}")
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    channels = index.shape[1] * groups
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"input has shape {tuple(x.shape)}; expected (N, {channels}, H, W) "
            f"for the compact weight {index.shape} with groups={groups}"
        )
    _check_dtypes(x, values, bias)
    x, padding = _resolve_padding(x, padding, index.shape[2:], dilation)
    for size, k, p, d in zip(x.shape[2:], index.shape[2:], padding, dilation):
        _conv_out_size(size, k, 1, p, d)
    if torch.compiler.is_compiling():  # one opaque op per call: no dispatch inside the graph
        y = compiled.compact_conv2d(
            x, values, index, bias, stride, padding, dilation, groups, variant
        )
        return y.squeeze(0) if unbatched else y
    with _autocast_off(x):
        y = CompactConv2dFunction.apply(
            x, values, index, bias, stride, padding, dilation, groups, variant
        )
    return y.squeeze(0) if unbatched else y


def padded_by_mode(x: torch.Tensor, conv: torch.nn.Conv2d) -> tuple:
    """``(x, padding)`` to convolve with for ``conv``'s geometry: as ``nn.Conv2d`` does, a
    ``padding_mode`` other than ``"zeros"`` pads ``x`` by that mode first, and the convolution
    then runs unpadded."""
    if conv.padding_mode == "zeros":
        return x, conv.padding
    return F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode), 0


class CompactLinearFunction(torch.autograd.Function):
    """Autograd for :func:`compact_linear` on a backend without its own derivative; the kernels
    live in ``backend``, which the caller selected for this call and the backward reuses."""

    @staticmethod
    def forward(ctx, x, values, index, bias, backend):
        x2d = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
        y = backend.compact_linear_forward(x2d, values, index, bias)
        ctx.backend, ctx.index, ctx.has_bias = backend, index, bias is not None
        ctx.save_for_backward(x2d, values)
        return y.reshape(*x.shape[:-1], index.rows)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x2d, values = ctx.saved_tensors
        needs_x, needs_values, _, needs_bias = ctx.needs_input_grad[:4]
        grad_x, grad_values, grad_bias = ctx.backend.compact_linear_backward(
            grad_y.reshape(x2d.shape[0], ctx.index.rows),
            x2d,
            values,
            ctx.index,
            ctx.has_bias,
            (needs_x, needs_values, needs_bias),
        )
        if grad_x is not None:
            grad_x = grad_x.reshape(*grad_y.shape[:-1], ctx.index.cols)
        return grad_x, grad_values, None, grad_bias, None


class CompactConv2dFunction(torch.autograd.Function):
    """Autograd for :func:`compact_conv2d`; the kernels live in the selected backend."""

    @staticmethod
    def forward(ctx, x, values, index, bias, stride, padding, dilation, groups, variant):
        backend = ops.select("compact_conv2d", (x, values, bias))
        if variant is None:
            variant = index.conv_plan.variant(
                tuple(x.shape),
                index.shape[2:],
                stride,
                padding,
                dilation,
                groups,
                x.dtype,
                x.device.type,
            )
        geometry = (stride, padding, dilation, groups, variant)
        y = backend.compact_conv2d_forward(x, values, index, bias, *geometry)
        ctx.backend, ctx.index, ctx.has_bias = backend, index, bias is not None
        ctx.geometry = geometry
        ctx.save_for_backward(x, values)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, values = ctx.saved_tensors
        needs_x, needs_values, _, needs_bias = ctx.needs_input_grad[:4]
        grad_x, grad_values, grad_bias = ctx.backend.compact_conv2d_backward(
            grad_y,
            x,
            values,
            ctx.index,
            ctx.has_bias,
            (needs_x, needs_values, needs_bias),
            *ctx.geometry,
        )
        return grad_x, grad_values, None, grad_bias, None, None, None, None, None


def _conv_out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    out = output_size(size, kernel, stride, padding, dilation)
    if out < 1:
        raise ValueError(
            f"the convolution's output would be empty: input size {size}, kernel "
            f"{kernel}, stride {stride}, padding {padding}, dilation {dilation}"
        )
    return out


def _check_compact(values, index, bias, dims: int) -> None:
    if not isinstance(index, CompactIndex):
        raise TypeError(
            f"index must be a sparse_tickets.compact.CompactIndex; got {type(index).__name__}"
        )
    if len(index.shape) != dims:
        raise ValueError(f"the compact weight has shape {index.shape}; expected {dims} dimensions")
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be a tensor; got {type(values).__name__}")
    index.check_values(values)
    if values.device != index.device:
        raise ValueError(
            f"values are on {values.device}; expected the index's device {index.device}"
        )
    if bias is not None and tuple(bias.shape) != (index.rows,):
        raise ValueError(f"bias has shape {tuple(bias.shape)}; expected ({index.rows},)")


def _autocast_inputs(x, weight, bias):
    """The inputs cast to the autocast dtype when autocast is on for ``x``'s device.

    The cast happens outside the autograd Function, so the Function (and the backend it picks)
    sees one dtype in forward and backward, and gradients flow back through the casts into
    full-precision parameters, as for torch's own autocast ops.
    """
    if not _autocast_on(x) or not x.is_floating_point():
        return x, weight, bias
    dtype = torch.get_autocast_dtype(x.device.type)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(x), cast(weight), cast(bias)


def _autocast_off(x: torch.Tensor):
    # Inside the Function the backend computes in the dtype it was chosen for, not a recast one.
    # Entering torch.autocast costs microseconds per call: only when it is on.
    if not _autocast_on(x):
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)


def _autocast_on(x: torch.Tensor) -> bool:
    # The meta device has no autocast (torch asks it nothing, and its own ops ignore an autocast
    # of any other device): shapes propagate in the inputs' dtypes, as F.linear's do there.
    return not x.is_meta and torch.is_autocast_enabled(x.device.type)


def _check_dtypes(x, weight, bias) -> None:
    dtypes = {t.dtype for t in (x, weight, bias) if t is not None}
    if len(dtypes) > 1:
        raise ValueError(
            f"input, weight and bias must share one dtype; got input {x.dtype}, "
            f"weight {weight.dtype}"
            + (f", bias {bias.dtype}" if bias is not None else "")
            + " (cast them, or use torch.autocast)"
        )


def _check_mask(mask: torch.Tensor, weight: torch.Tensor) -> None:
    # Cheap checks only (no device sync): the hot path of every training step runs through here.
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(
            f"mask must be a bool tensor; got {got} (convert 0/1 masks with "
            f"mask.bool(), or use set_mask on a masked layer)"
        )
    if mask.shape != weight.shape:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}; expected the weight's shape {tuple(weight.shape)}"
        )
    if mask.device != weight.device:
        raise ValueError(f"mask is on {mask.device}; expected the weight's device {weight.device}")


def _check_bias(bias: torch.Tensor | None, weight: torch.Tensor) -> None:
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias has shape {tuple(bias.shape)}; expected ({weight.shape[0]},)")


def _pair(value: IntPair, name: str) -> tuple:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r}")
    return pair


def _resolve_padding(x: torch.Tensor, padding, kernel_size, dilation):
    """The input (padded here when "same" needs uneven padding) and a symmetric padding pair."""
    if padding == "valid":
        return x, (0, 0)
    if padding != "same":
        pair = _pair(padding, "padding")
        if min(pair) < 0:
            raise ValueError(f"padding must be non-negative; got {pair}")
        return x, pair
    totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
    symmetric = tuple(total // 2 for total in totals)
    extra = [total % 2 for total in totals]
    if any(extra):
        # F.pad takes (left, right, top, bottom): the odd pixel goes right and bottom.
        x = F.pad(x, (0, extra[1], 0, extra[0]))
    return x, symmetric
