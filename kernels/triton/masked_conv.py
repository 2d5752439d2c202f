"""Masked conv2d on the masked matmul kernels, through im2col.

A convolution with weight ``W`` (C_out, C_in, kH, kW) is the matmul of the unfolded input
``cols`` (N * L, C_in * kH * kW), one row per output pixel, with ``W`` viewed as (C_out,
C_in * kH * kW); the mask views the same way, so the three masked matmul kernels serve the
convolution unchanged:

    forward          y  = fold_rows(cols @ (W ⊙ mask)^T) + b
    input gradient   dx = col2im(dy_rows @ (W ⊙ mask))
    weight gradient  dW = (dy_rows^T @ cols) ⊙ mask     (empty mask tiles skipped)

im2col materialises ``cols`` (kH * kW times the input), which an implicit-GEMM kernel would not;
it is the simple, general form (any stride, padding, dilation), kept until an implicit-GEMM
kernel is measured faster on a GPU. ``cols`` may pass 2^31 elements while ``x`` does not: the
matmul kernels' offsets are int64. Groups other than 1 are not served (the backend says so).
No autograd here: see sparse_tickets.ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparse_tickets.conv_geometry import output_shape

from . import masked_matmul


def _unfold_rows(
    x: torch.Tensor, kernel_size: tuple, stride: tuple, padding: tuple, dilation: tuple
) -> torch.Tensor:
    """(N * L, C_in * kH * kW): one row per output pixel, in (n, out_row, out_col) order."""
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _output_size(
    x: torch.Tensor, kernel_size: tuple, stride: tuple, padding: tuple, dilation: tuple
) -> tuple:
    return output_shape(x.shape[2:], kernel_size, stride, padding, dilation)


def masked_conv2d_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
) -> torch.Tensor:
    """y = conv2d(x, W ⊙ mask) + b for groups == 1."""
    kernel_size = tuple(weight.shape[2:])
    out_h, out_w = _output_size(x, kernel_size, stride, padding, dilation)
    rows = _unfold_rows(x, kernel_size, stride, padding, dilation)
    c_out = weight.shape[0]
    y_rows = masked_matmul.masked_linear_forward(
        rows, weight.reshape(c_out, -1), mask.reshape(c_out, -1), bias
    )
    return (
        y_rows.view(x.shape[0], out_h * out_w, c_out)
        .transpose(1, 2)
        .reshape(x.shape[0], c_out, out_h, out_w)
    )


def _grad_rows(grad_y: torch.Tensor) -> torch.Tensor:
    """dy as (N * L, C_out), rows in the order of :func:`_unfold_rows`."""
    n, c_out = grad_y.shape[:2]
    return grad_y.reshape(n, c_out, -1).transpose(1, 2).reshape(-1, c_out)


def masked_conv2d_input_grad(
    grad_y: torch.Tensor,
    x_shape: torch.Size,
    weight: torch.Tensor,
    mask: torch.Tensor,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
) -> torch.Tensor:
    """dx = col2im(dy_rows @ (W ⊙ mask))."""
    c_out = weight.shape[0]
    cols = masked_matmul.masked_linear_input_grad(
        _grad_rows(grad_y), weight.reshape(c_out, -1), mask.reshape(c_out, -1)
    )
    n = grad_y.shape[0]
    cols = cols.view(n, -1, cols.shape[1]).transpose(1, 2)
    return F.fold(
        cols,
        tuple(x_shape[2:]),
        tuple(weight.shape[2:]),
        dilation=dilation,
        padding=padding,
        stride=stride,
    )


def masked_conv2d_weight_grad(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight_shape: torch.Size,
    mask: torch.Tensor,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
) -> torch.Tensor:
    """dW = (dy_rows^T @ cols) ⊙ mask, empty mask tiles skipped."""
    c_out = weight_shape[0]
    rows = _unfold_rows(x, tuple(weight_shape[2:]), stride, padding, dilation)
    grad = masked_matmul.masked_linear_weight_grad(
        _grad_rows(grad_y), rows, mask.reshape(c_out, -1)
    )
    return grad.view(weight_shape)
