"""The torch ops of the compact sparse mode: their schemas and fake implementations.

The schemas are defined here, in one place, for every device; the C++ extension
(kernels/csrc/cpu) and the CUDA extension (kernels/csrc/cuda) register only implementations
(``TORCH_LIBRARY_IMPL(sparse_tickets, CPU|CUDA, m)``). The fake implementations give
torch.compile the output shapes without running a kernel.

A compact weight ``W`` of shape ``(R, C)`` is its nonzeros in row-major order (``values``,
``W[mask]``) with a CSR index of the mask: ``row_ptr`` (int32, ``R + 1``) and ``col_idx``
(int32, one per nonzero). The transposed index (CSR of ``mask.T``) adds ``value_index``: for
each of its entries, the position of that nonzero in ``values``.

``spmm(x, row_ptr, col_idx, values, value_index, bias)``
    ``out[b, r] = bias[r] + sum_j values[v(j)] * x[b, col_idx[j]]`` over
    ``j in [row_ptr[r], row_ptr[r+1])``, ``v(j) = value_index[j]`` if given, else ``j``.
    ``x`` is ``(B, C)``; ``out`` is ``(B, R)``, contiguous, in ``x``'s dtype. The forward
    (``y = x W^T + b``) with the CSR index, and the input gradient (``dx = dy W``) with the
    transposed one.
``sddmm(grad_out, x, row_ptr, col_idx)``
    ``out[j] = sum_b grad_out[b, r(j)] * x[b, col_idx[j]]`` for each nonzero ``j`` of row
    ``r(j)``: the weight gradient ``(dy^T x)`` at the nonzeros only, shape ``(nnz,)``.
``sgd_step_`` / ``adam_step_``
    One fused, in-place step of ``torch.optim.SGD`` / ``Adam`` (AdamW with
    ``decoupled_weight_decay``) on one tensor: the arithmetic of
    :mod:`sparse_tickets.ops.reference.optim`. With a ``mask`` (bool, the param's shape) every
    entry it prunes ends the step as +0.0 in the param and in every state tensor; without one
    (the compact values) every entry steps. ``momentum_buffer`` / ``max_exp_avg_sq`` are empty
    tensors when unused; ``first_step`` makes the momentum buffer a copy of the gradient, as
    torch does on a buffer's first step; ``step`` is the step count after this step's increment.
"""

from __future__ import annotations

import torch

NAMESPACE = "sparse_tickets"

SCHEMAS = {
    "spmm": "spmm(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, Tensor? value_index, "
            "Tensor? bias) -> Tensor",
    "sddmm": "sddmm(Tensor grad_out, Tensor x, Tensor row_ptr, Tensor col_idx) -> Tensor",
    "sgd_step_": "sgd_step_(Tensor(a!) param, Tensor grad, Tensor(b!) momentum_buffer, "
                 "Tensor? mask, float lr, float weight_decay, float momentum, float dampening, "
                 "bool nesterov, bool maximize, bool first_step) -> ()",
    "adam_step_": "adam_step_(Tensor(a!) param, Tensor grad, Tensor(b!) exp_avg, "
                  "Tensor(c!) exp_avg_sq, Tensor(d!) max_exp_avg_sq, Tensor? mask, float lr, "
                  "float beta1, float beta2, float eps, float weight_decay, float step, "
                  "bool amsgrad, bool maximize, bool decoupled_weight_decay) -> ()",
}

_library = torch.library.Library(NAMESPACE, "DEF")
for _schema in SCHEMAS.values():
    _library.define(_schema)


@torch.library.register_fake(f"{NAMESPACE}::spmm")
def _spmm_fake(x, row_ptr, col_idx, values, value_index, bias):
    return x.new_empty((x.shape[0], row_ptr.shape[0] - 1))


@torch.library.register_fake(f"{NAMESPACE}::sddmm")
def _sddmm_fake(grad_out, x, row_ptr, col_idx):
    return x.new_empty((col_idx.shape[0],))


@torch.library.register_fake(f"{NAMESPACE}::sgd_step_")
def _sgd_step_fake(param, grad, momentum_buffer, mask, lr, weight_decay, momentum, dampening,
                   nesterov, maximize, first_step):
    return None


@torch.library.register_fake(f"{NAMESPACE}::adam_step_")
def _adam_step_fake(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, mask, lr, beta1, beta2,
                    eps, weight_decay, step, amsgrad, maximize, decoupled_weight_decay):
    return None
