"""The compact conv2d of the compiled backends, in its two forms.

- Direct (CPU): the sparse convolution kernels of kernels/csrc/cpu/sparse_conv.cpp, vectorised
  over the batch or over the output width (``variant`` "batch" / "width"); no copy of the input
  larger than the input itself, any stride, padding, dilation and groups.
- im2col (``variant`` "im2col", and every device without direct kernels): the input unfolded
  into its ``(N * L, C * kH * kW)`` patches, multiplied by the compact ``(O, C * kH * kW)``
  matrix with the compact linear kernels, the input gradient folded back; groups=1 only. The
  unfolded input costs ``kH * kW`` times the input's memory.

``padding`` is a pair of ints here (the functional layer resolves "same" and "valid").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...conv_geometry import output_shape

DIRECT_VARIANTS = ("batch", "width")


def direct_forward(x, values, index, bias, stride, padding, dilation, groups, variant):
    return torch.ops.sparse_tickets.sparse_conv2d(
        x,
        index.row_ptr,
        index.col_idx,
        values,
        bias,
        list(index.shape[2:]),
        list(stride),
        list(padding),
        list(dilation),
        groups,
        variant,
    )


def direct_backward(
    grad_y, x, values, index, has_bias, needs_grad, stride, padding, dilation, groups, variant
):
    needs_x, needs_values, needs_bias = needs_grad
    grad_x = grad_values = None
    if needs_x or needs_values:
        grad_x, grad_values = torch.ops.sparse_tickets.sparse_conv2d_backward(
            grad_y,
            x,
            index.row_ptr,
            index.col_idx,
            index.t_row_ptr,
            index.t_col_idx,
            index.t_value_index,
            values,
            list(index.shape[2:]),
            list(stride),
            list(padding),
            list(dilation),
            groups,
            variant,
            [needs_x, needs_values],
        )
    grad_bias = grad_y.sum((0, 2, 3)) if has_bias and needs_bias else None
    return (grad_x if needs_x else None), (grad_values if needs_values else None), grad_bias


def im2col_forward(linear_forward, x, values, index, bias, stride, padding, dilation, groups):
    _check_ungrouped(groups)
    batch = x.shape[0]
    out_h, out_w = _out_size(x, index, stride, padding, dilation)
    # (N, C*kH*kW, L) -> (N*L, C*kH*kW): one row per output pixel.
    patches = F.unfold(x, index.shape[2:], dilation=dilation, padding=padding, stride=stride)
    patches = patches.transpose(1, 2).reshape(batch * out_h * out_w, index.cols)
    y = linear_forward(patches, values, index, bias)
    return (
        y.reshape(batch, out_h * out_w, index.rows)
        .transpose(1, 2)
        .reshape(batch, index.rows, out_h, out_w)
    )


def im2col_backward(
    linear_backward,
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
):
    _check_ungrouped(groups)
    batch = x.shape[0]
    out_h, out_w = grad_y.shape[2:]
    patches = F.unfold(x, index.shape[2:], dilation=dilation, padding=padding, stride=stride)
    patches = patches.transpose(1, 2).reshape(batch * out_h * out_w, index.cols)
    grad_rows = grad_y.reshape(batch, index.rows, out_h * out_w).transpose(1, 2)
    grad_rows = grad_rows.reshape(batch * out_h * out_w, index.rows)
    grad_patches, grad_values, grad_bias = linear_backward(
        grad_rows, patches, values, index, has_bias, needs_grad
    )
    grad_x = None
    if grad_patches is not None:
        grad_patches = grad_patches.reshape(batch, out_h * out_w, index.cols)
        grad_x = F.fold(
            grad_patches.transpose(1, 2),
            x.shape[2:],
            index.shape[2:],
            dilation=dilation,
            padding=padding,
            stride=stride,
        )
    return grad_x, grad_values, grad_bias


def _out_size(x, index, stride, padding, dilation):
    return output_shape(x.shape[2:], index.shape[2:], stride, padding, dilation)


def _check_ungrouped(groups):
    if groups != 1:
        raise ValueError(
            f"the im2col compact conv2d serves groups=1 only, got groups={groups}; "
            f"use a direct variant (batch or width) on the CPU"
        )
