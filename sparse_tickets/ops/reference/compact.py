"""The compact linear and conv2d in plain torch: the numbers the compiled kernels are tested
against.

It rebuilds the dense weight from the values, so it costs what the dense op costs; it exists
to define the results (and to serve devices the compiled extensions do not), not to be fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...formats import CompactIndex


def compact_linear_forward(
    x: torch.Tensor, values: torch.Tensor, index: CompactIndex, bias: torch.Tensor | None
) -> torch.Tensor:
    # y = x W^T + b, W the (R, C) matrix holding ``values`` at the mask's kept entries
    return F.linear(x, _matrix(index, values), bias)


def compact_linear_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    values: torch.Tensor,
    index: CompactIndex,
    has_bias: bool,
    needs_grad: tuple,
):
    # dx = dy W;  dvalues = (dy^T x) at the kept entries;  db = sum_n dy
    needs_x, needs_values, needs_bias = needs_grad
    grad_x = grad_y @ _matrix(index, values) if needs_x else None
    grad_values = index.gather((grad_y.t() @ x).reshape(index.shape)) if needs_values else None
    grad_bias = grad_y.sum(0) if has_bias and needs_bias else None
    return grad_x, grad_values, grad_bias


def compact_conv2d_forward(
    x: torch.Tensor,
    values: torch.Tensor,
    index: CompactIndex,
    bias: torch.Tensor | None,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
    groups: int,
    variant: str,
) -> torch.Tensor:
    # y = conv2d(x, W) + b, W holding ``values`` at the mask's kept entries (any variant)
    return F.conv2d(x, index.to_dense(values), bias, stride, padding, dilation, groups)


def compact_conv2d_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    values: torch.Tensor,
    index: CompactIndex,
    has_bias: bool,
    needs_grad: tuple,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
    groups: int,
    variant: str,
):
    # dx = conv2d^T(dy, W);  dvalues = conv2d_weight_grad(x, dy) at the kept entries;  db = sum dy
    needs_x, needs_values, needs_bias = needs_grad
    output_mask = [needs_x, needs_values, has_bias and needs_bias]
    if not any(output_mask):
        return None, None, None
    grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_y,
        x,
        index.to_dense(values),
        [index.rows] if has_bias else None,
        list(stride),
        list(padding),
        list(dilation),
        False,
        [0, 0],
        groups,
        output_mask,
    )
    grad_values = index.gather(grad_weight) if grad_weight is not None else None
    return grad_x, grad_values, grad_bias


def _matrix(index: CompactIndex, values: torch.Tensor) -> torch.Tensor:
    return index.to_dense(values).reshape(index.rows, index.cols)
