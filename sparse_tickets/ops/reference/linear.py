"""Masked linear in plain torch: the numbers every other backend is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .masking import apply_mask, masked_weight, zero_pruned_


def masked_linear_forward(
    x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    # y = x @ (W ⊙ M)^T + b, x of shape (N, in_features)
    return F.linear(x, apply_mask(weight, mask), bias)


def masked_linear_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    has_bias: bool,
    needs_grad: tuple,
):
    # dx = dy @ (W ⊙ M);  dW = (dy^T @ x) ⊙ M;  db = sum_n dy
    needs_x, needs_weight, needs_bias = needs_grad
    grad_x = grad_y @ apply_mask(weight, mask) if needs_x else None
    grad_weight = zero_pruned_(grad_y.t() @ x, mask) if needs_weight else None
    grad_bias = grad_y.sum(0) if has_bias and needs_bias else None
    return grad_x, grad_weight, grad_bias


def masked_linear_autograd(
    x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    # The same numbers as the two functions above, composed of torch's own autograd: the masked
    # weight made once per call and kept by F.linear for dx, dW masked on its way back.
    return F.linear(x, masked_weight(weight, mask), bias)
