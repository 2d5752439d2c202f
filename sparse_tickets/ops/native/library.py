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
``compact_linear(x, row_ptr, col_idx, t_row_ptr, t_col_idx, t_value_index, values, bias)``
    ``spmm(x, row_ptr, col_idx, values, None, bias)`` with its derivative in C++ (CPU only):
    the input gradient by spmm over the transposed index, the gradient of ``values`` by sddmm,
    the bias gradient a column sum. One op call per layer and no Python in the backward.
``sparse_conv2d(x, row_ptr, col_idx, values, bias, kernel_size, stride, padding, dilation,
groups, variant)``
    ``conv2d(x, W, bias, stride, padding, dilation, groups)`` for the compact weight ``W`` of
    shape ``(O, C / groups, kH, kW)``: the CSR index of its mask as the ``(O, C / groups * kH *
    kW)`` matrix, whose column ``j`` is the tap ``(j // (kH*kW), j // kW % kH, j % kW)``, and its
    ``values``. Zero padding (ints). ``x`` is ``(N, C, H, W)``, the output ``(N, O, OH, OW)``,
    contiguous. ``variant`` names the vectorisation, ``"batch"`` (over the batch, operands
    copied batch-minor) or ``"width"`` (over the output width): the same numbers up to the order
    of the sums.
``sparse_conv2d_backward(grad_out, x, row_ptr, col_idx, t_row_ptr, t_col_idx, t_value_index,
values, kernel_size, stride, padding, dilation, groups, variant, output_mask)``
    ``(grad_x, grad_values)`` of the same convolution, with the transposed index too; the
    gradient of ``values`` only at the kept weights, ``(nnz,)``. An output not asked for in
    ``output_mask`` comes back as an empty tensor.
``sgd_step_`` / ``adam_step_``
    One fused, in-place step of ``torch.optim.SGD`` / ``Adam`` (AdamW with
    ``decoupled_weight_decay``) on one tensor: the arithmetic of
    :mod:`sparse_tickets.ops.reference.optim`. With a ``mask`` (bool, the param's shape) every
    entry it prunes ends the step as +0.0 in the param and in every state tensor; without one
    (the compact values) every entry steps. ``momentum_buffer`` / ``max_exp_avg_sq`` are empty
    tensors when unused; ``first_step`` makes the momentum buffer a copy of the gradient, as
    torch does on a buffer's first step; ``step`` is the step count after this step's increment.
``adam_steps_`` (CPU)
    ``adam_step_`` over lists (one entry per param, ``max_exp_avg_sqs`` empty without amsgrad),
    each float32 CPU counter in ``state_steps`` incremented first, as torch.optim does: a whole
    param group in one call.
"""

from __future__ import annotations

import torch

from ...conv_geometry import output_shape

NAMESPACE = "sparse_tickets"

SCHEMAS = {
    "spmm": "spmm(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, Tensor? value_index, "
    "Tensor? bias) -> Tensor",
    "sddmm": "sddmm(Tensor grad_out, Tensor x, Tensor row_ptr, Tensor col_idx) -> Tensor",
    "compact_linear": "compact_linear(Tensor x, Tensor row_ptr, Tensor col_idx, "
    "Tensor t_row_ptr, Tensor t_col_idx, Tensor t_value_index, "
    "Tensor values, Tensor? bias) -> Tensor",
    "sparse_conv2d": "sparse_conv2d(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, "
    "Tensor? bias, int[2] kernel_size, int[2] stride, int[2] padding, "
    "int[2] dilation, int groups, str variant) -> Tensor",
    "sparse_conv2d_backward": "sparse_conv2d_backward(Tensor grad_out, Tensor x, Tensor row_ptr, "
    "Tensor col_idx, Tensor t_row_ptr, Tensor t_col_idx, "
    "Tensor t_value_index, Tensor values, int[2] kernel_size, "
    "int[2] stride, int[2] padding, int[2] dilation, int groups, "
    "str variant, bool[2] output_mask) -> (Tensor, Tensor)",
    "sgd_step_": "sgd_step_(Tensor(a!) param, Tensor grad, Tensor(b!) momentum_buffer, "
    "Tensor? mask, float lr, float weight_decay, float momentum, float dampening, "
    "bool nesterov, bool maximize, bool first_step) -> ()",
    "adam_step_": "adam_step_(Tensor(a!) param, Tensor grad, Tensor(b!) exp_avg, "
    "Tensor(c!) exp_avg_sq, Tensor(d!) max_exp_avg_sq, Tensor? mask, float lr, "
    "float beta1, float beta2, float eps, float weight_decay, float step, "
    "bool amsgrad, bool maximize, bool decoupled_weight_decay) -> ()",
    "adam_steps_": "adam_steps_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
    "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] max_exp_avg_sqs, Tensor?[] masks, "
    "Tensor(e!)[] state_steps, float lr, float beta1, float beta2, float eps, "
    "float weight_decay, bool amsgrad, bool maximize, "
    "bool decoupled_weight_decay) -> ()",
}

_library = torch.library.Library(NAMESPACE, "DEF")
for _schema in SCHEMAS.values():
    _library.define(_schema)


@torch.library.register_fake(f"{NAMESPACE}::spmm")
def _spmm_fake(x, row_ptr, col_idx, values, value_index, bias):
    return x.new_empty((x.shape[0], row_ptr.shape[0] - 1))


@torch.library.register_fake(f"{NAMESPACE}::compact_linear")
def _compact_linear_fake(x, row_ptr, col_idx, t_row_ptr, t_col_idx, t_value_index, values, bias):
    return x.new_empty((x.shape[0], row_ptr.shape[0] - 1))


@torch.library.register_fake(f"{NAMESPACE}::sddmm")
def _sddmm_fake(grad_out, x, row_ptr, col_idx):
    return x.new_empty((col_idx.shape[0],))


@torch.library.register_fake(f"{NAMESPACE}::sparse_conv2d")
def _sparse_conv2d_fake(
    x, row_ptr, col_idx, values, bias, kernel_size, stride, padding, dilation, groups, variant
):
    height, width = output_shape(x.shape[2:], kernel_size, stride, padding, dilation)
    return x.new_empty((x.shape[0], row_ptr.shape[0] - 1, height, width))


@torch.library.register_fake(f"{NAMESPACE}::sparse_conv2d_backward")
def _sparse_conv2d_backward_fake(
    grad_out,
    x,
    row_ptr,
    col_idx,
    t_row_ptr,
    t_col_idx,
    t_value_index,
    values,
    kernel_size,
    stride,
    padding,
    dilation,
    groups,
    variant,
    output_mask,
):
    grad_x = x.new_empty(x.shape) if output_mask[0] else x.new_empty((0,))
    grad_values = values.new_empty(values.shape) if output_mask[1] else x.new_empty((0,))
    return grad_x, grad_values


@torch.library.register_fake(f"{NAMESPACE}::sgd_step_")
def _sgd_step_fake(
    param,
    grad,
    momentum_buffer,
    mask,
    lr,
    weight_decay,
    momentum,
    dampening,
    nesterov,
    maximize,
    first_step,
):
    return None


@torch.library.register_fake(f"{NAMESPACE}::adam_step_")
def _adam_step_fake(
    param,
    grad,
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq,
    mask,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    step,
    amsgrad,
    maximize,
    decoupled_weight_decay,
):
    return None
