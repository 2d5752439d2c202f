"""The compact linear and conv2d as torch.library custom ops, for torch.compile.

Eager calls run the autograd Functions of :mod:`sparse_tickets.functional`. Under torch.compile
the compact layers call these ops instead: the graph holds one opaque op per layer (its fake
implementation gives the shapes), and the backend is chosen inside the op when it runs, by
:func:`sparse_tickets.ops.select` as in eager mode, so Python dispatch (and the extension's
build checks) never runs inside the compiled region and ``fullgraph=True`` holds. The numbers
are those of the eager path: the same backend kernels on the same inputs.

The index travels as its five tensors plus the weight's shape (see
:class:`~sparse_tickets.formats.CompactIndex`); the conv op runs the backend's compact conv2d
(the direct sparse convolution on the CPU), any groups, with its variant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..conv_geometry import output_shape
from ..formats import CompactIndex
from ..formats.conv_plan import choose_variant
from .dispatch import select

NAMESPACE = "sparse_tickets_compiled"


@torch.library.custom_op(f"{NAMESPACE}::compact_linear", mutates_args=())
def _compact_linear(
    x: Tensor,
    values: Tensor,
    bias: Tensor | None,
    row_ptr: Tensor,
    col_idx: Tensor,
    t_row_ptr: Tensor,
    t_col_idx: Tensor,
    t_value_index: Tensor,
    shape: Sequence[int],
) -> Tensor:
    # y = x W^T + b for the 2-D x, W the compact weight
    index = CompactIndex(tuple(shape), row_ptr, col_idx, t_row_ptr, t_col_idx, t_value_index)
    return _backend(x, values, bias).compact_linear_forward(x, values, index, bias)


@_compact_linear.register_fake
def _compact_linear_fake(
    x, values, bias, row_ptr, col_idx, t_row_ptr, t_col_idx, t_value_index, shape
):
    return x.new_empty((x.shape[0], row_ptr.shape[0] - 1))


@torch.library.custom_op(f"{NAMESPACE}::compact_linear_backward", mutates_args=())
def _compact_linear_backward(
    grad_y: Tensor,
    x: Tensor,
    values: Tensor,
    row_ptr: Tensor,
    col_idx: Tensor,
    t_row_ptr: Tensor,
    t_col_idx: Tensor,
    t_value_index: Tensor,
    shape: Sequence[int],
    needs_x: bool,
    needs_values: bool,
    needs_bias: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    # dx = dy W;  dvalues = (dy^T x) at the kept entries;  db = sum_n dy. A gradient not
    # needed comes back empty: a custom op cannot return None.
    index = CompactIndex(tuple(shape), row_ptr, col_idx, t_row_ptr, t_col_idx, t_value_index)
    grads = _backend(x, values, None).compact_linear_backward(
        grad_y, x, values, index, needs_bias, (needs_x, needs_values, needs_bias)
    )
    return tuple(grad_y.new_empty(0) if grad is None else grad for grad in grads)


def _gradients_like(grad_y, x, values, needs_x, needs_values, needs_bias):
    """The shapes a compact backward returns: each gradient asked for, an empty tensor for one
    not asked for (the linear's and the conv's alike)."""
    return (
        x.new_empty(x.shape if needs_x else (0,)),
        values.new_empty(values.shape if needs_values else (0,)),
        grad_y.new_empty((grad_y.shape[1],) if needs_bias else (0,)),
    )


@_compact_linear_backward.register_fake
def _compact_linear_backward_fake(
    grad_y,
    x,
    values,
    row_ptr,
    col_idx,
    t_row_ptr,
    t_col_idx,
    t_value_index,
    shape,
    needs_x,
    needs_values,
    needs_bias,
):
    return _gradients_like(grad_y, x, values, needs_x, needs_values, needs_bias)


def _setup_context(ctx, inputs, output) -> None:
    x, values, bias, *index, shape = inputs
    ctx.save_for_backward(x, values, *index)
    ctx.shape, ctx.has_bias = shape, bias is not None


def _backward(ctx, grad_y):
    x, values, *index = ctx.saved_tensors
    needs_x, needs_values, needs_bias = ctx.needs_input_grad[:3]
    grad_x, grad_values, grad_bias = _compact_linear_backward(
        grad_y.contiguous(),
        x,
        values,
        *index,
        ctx.shape,
        needs_x,
        needs_values,
        needs_bias and ctx.has_bias,
    )
    return (
        grad_x if needs_x else None,
        grad_values if needs_values else None,
        grad_bias if needs_bias and ctx.has_bias else None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


_compact_linear.register_autograd(_backward, setup_context=_setup_context)


def compact_linear(
    x: Tensor, values: Tensor, index: CompactIndex, bias: Tensor | None = None
) -> Tensor:
    """:func:`sparse_tickets.functional.compact_linear` through the custom op (any leading
    dimensions of ``x``)."""
    x2d = x.reshape(-1, x.shape[-1])
    y = _compact_linear(x2d, values, bias, *index.tensors().values(), list(index.shape))
    return y.reshape(*x.shape[:-1], index.rows)


@torch.library.custom_op(f"{NAMESPACE}::compact_conv2d", mutates_args=())
def _compact_conv2d(
    x: Tensor,
    values: Tensor,
    bias: Tensor | None,
    row_ptr: Tensor,
    col_idx: Tensor,
    t_row_ptr: Tensor,
    t_col_idx: Tensor,
    t_value_index: Tensor,
    shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    variant: str,
) -> Tensor:
    # y = conv2d(x, W) + b, W the compact weight, by the backend's kernels for ``variant``
    index = CompactIndex(tuple(shape), row_ptr, col_idx, t_row_ptr, t_col_idx, t_value_index)
    return _conv_backend(x, values, bias).compact_conv2d_forward(
        x, values, index, bias, tuple(stride), tuple(padding), tuple(dilation), groups, variant
    )


@_compact_conv2d.register_fake
def _compact_conv2d_fake(
    x,
    values,
    bias,
    row_ptr,
    col_idx,
    t_row_ptr,
    t_col_idx,
    t_value_index,
    shape,
    stride,
    padding,
    dilation,
    groups,
    variant,
):
    out = output_shape(x.shape[2:], shape[2:], stride, padding, dilation)
    return x.new_empty((x.shape[0], shape[0], *out))


@torch.library.custom_op(f"{NAMESPACE}::compact_conv2d_backward", mutates_args=())
def _compact_conv2d_backward(
    grad_y: Tensor,
    x: Tensor,
    values: Tensor,
    row_ptr: Tensor,
    col_idx: Tensor,
    t_row_ptr: Tensor,
    t_col_idx: Tensor,
    t_value_index: Tensor,
    shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    variant: str,
    needs_x: bool,
    needs_values: bool,
    needs_bias: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    # dx = conv2d^T(dy, W);  dvalues = the weight gradient at the kept entries;  db = sum dy
    index = CompactIndex(tuple(shape), row_ptr, col_idx, t_row_ptr, t_col_idx, t_value_index)
    grads = _conv_backend(x, values, None).compact_conv2d_backward(
        grad_y,
        x,
        values,
        index,
        needs_bias,
        (needs_x, needs_values, needs_bias),
        tuple(stride),
        tuple(padding),
        tuple(dilation),
        groups,
        variant,
    )
    return tuple(grad_y.new_empty(0) if grad is None else grad for grad in grads)


@_compact_conv2d_backward.register_fake
def _compact_conv2d_backward_fake(
    grad_y,
    x,
    values,
    row_ptr,
    col_idx,
    t_row_ptr,
    t_col_idx,
    t_value_index,
    shape,
    stride,
    padding,
    dilation,
    groups,
    variant,
    needs_x,
    needs_values,
    needs_bias,
):
    return _gradients_like(grad_y, x, values, needs_x, needs_values, needs_bias)


def _conv_setup_context(ctx, inputs, output) -> None:
    x, values, bias, *index, shape, stride, padding, dilation, groups, variant = inputs
    ctx.save_for_backward(x, values, *index)
    ctx.has_bias = bias is not None
    ctx.geometry = (shape, stride, padding, dilation, groups, variant)


def _conv_backward(ctx, grad_y):
    x, values, *index = ctx.saved_tensors
    needs_x, needs_values, needs_bias = ctx.needs_input_grad[:3]
    grad_x, grad_values, grad_bias = _compact_conv2d_backward(
        grad_y.contiguous(),
        x,
        values,
        *index,
        *ctx.geometry,
        needs_x,
        needs_values,
        needs_bias and ctx.has_bias,
    )
    return (
        grad_x if needs_x else None,
        grad_values if needs_values else None,
        grad_bias if needs_bias and ctx.has_bias else None,
    ) + (None,) * 11


_compact_conv2d.register_autograd(_conv_backward, setup_context=_conv_setup_context)


def compact_conv2d(
    x: Tensor,
    values: Tensor,
    index: CompactIndex,
    bias: Tensor | None,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
    groups: int,
    variant: str | None,
) -> Tensor:
    """:func:`sparse_tickets.functional.compact_conv2d` (4-D ``x``, pair geometry, padding
    resolved) through the custom op. The variant (None: the rule of
    :mod:`~sparse_tickets.formats.conv_plan`) is chosen when the op runs, as in eager mode."""
    return _compact_conv2d(
        x,
        values,
        bias,
        *index.tensors().values(),
        list(index.shape),
        list(stride),
        list(padding),
        list(dilation),
        groups,
        variant or "auto",
    )


def _backend(x: Tensor, values: Tensor, bias: Tensor | None):
    return select("compact_linear", (x, values, bias))


class _ConvBackend:
    """The selected backend's compact conv2d, with the variant ``"auto"`` resolved by the
    rule of :mod:`~sparse_tickets.formats.conv_plan` (the same choice eager mode records)."""

    def __init__(self, backend) -> None:
        self.backend = backend

    def compact_conv2d_forward(
        self, x, values, index, bias, stride, padding, dilation, groups, variant
    ):
        variant = self._resolve(variant, x, index, stride, padding, dilation)
        return self.backend.compact_conv2d_forward(
            x, values, index, bias, stride, padding, dilation, groups, variant
        )

    def compact_conv2d_backward(
        self,
        grad_y,
        x,
        values,
        index,
        has_bias,
        needs_grad,
        stride,
        padding,
        dilation,
        groups,
        variant,
    ):
        variant = self._resolve(variant, x, index, stride, padding, dilation)
        return self.backend.compact_conv2d_backward(
            grad_y,
            x,
            values,
            index,
            has_bias,
            needs_grad,
            stride,
            padding,
            dilation,
            groups,
            variant,
        )

    @staticmethod
    def _resolve(variant, x, index, stride, padding, dilation) -> str:
        if variant != "auto":
            return variant
        return choose_variant(
            tuple(x.shape), index.shape[2:], stride, padding, dilation, x.dtype, x.device.type
        )


def _conv_backend(x: Tensor, values: Tensor, bias: Tensor | None) -> _ConvBackend:
    return _ConvBackend(select("compact_conv2d", (x, values, bias)))
