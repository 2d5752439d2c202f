"""Masked conv2d in plain torch: the numbers every other backend is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .masking import apply_mask, masked_weight, zero_pruned_


def masked_conv2d_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
    groups: int,
) -> torch.Tensor:
    # y = conv2d(x, W ⊙ M) + b
    return F.conv2d(x, apply_mask(weight, mask), bias, stride, padding, dilation, groups)


def masked_conv2d_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    has_bias: bool,
    needs_grad: tuple,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
    groups: int,
):
    # dx = conv2d^T(dy, W ⊙ M);  dW = conv2d_weight_grad(x, dy) ⊙ M;  db = sum_{n,h,w} dy
    needs_x, needs_weight, needs_bias = needs_grad
    output_mask = [needs_x, needs_weight, has_bias and needs_bias]
    if not any(output_mask):
        return None, None, None
    bias_sizes = [weight.shape[0]] if has_bias else None
    grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_y,
        x,
        apply_mask(weight, mask),
        bias_sizes,
        list(stride),
        list(padding),
        list(dilation),
        False,
        [0, 0],
        groups,
        output_mask,
    )
    if grad_weight is not None:
        grad_weight = zero_pruned_(grad_weight, mask)
    return grad_x, grad_weight, grad_bias


def masked_conv2d_autograd(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
    groups: int,
) -> torch.Tensor:
    # The same numbers as the two functions above, composed of torch's own autograd.
    return F.conv2d(x, masked_weight(weight, mask), bias, stride, padding, dilation, groups)
