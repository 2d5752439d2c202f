"""The ``cpu`` and ``cuda`` backends: the compact linear, the compact conv2d and the fused
optimizer steps as the compiled torch ops of :mod:`.library`.

The compact linear is what makes a sparse level cheap: its forward and input gradient are SpMMs
over the mask's CSR index and its transpose, and the weight gradient an SDDMM at the nonzeros,
so each costs O(nnz * batch) instead of O(out * in * batch). The compact conv2d is a direct
sparse convolution on the CPU and im2col around the compact linear elsewhere (:mod:`.conv`).
The optimizer steps are one fused pass per tensor (the reference makes about ten), with a mask
for dense-masked weights and without one for compact values.

The backend for a device is available once its extension has built and loaded (on first use;
see :mod:`.extension`); until then, or without a compiler, the reference serves and
``sparse_tickets.backends()`` says why.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..base import Backend
from . import conv, extension

_STEPS = ("masked_sgd_step", "masked_adam_step")


class NativeBackend(Backend):
    """One compiled extension's backend: ``cpu`` or ``cuda``, named by its device type."""

    def __init__(self, spec: extension.ExtensionSpec, dtypes: frozenset) -> None:
        self.spec = spec
        self._dtypes = dtypes
        if spec.kind == "cpu":  # the derivative in C++ (kernels/csrc/cpu/compact_autograd.cpp)
            self.compact_linear_autograd = _compact_linear_with_derivative

    @property
    def name(self) -> str:
        return self.spec.kind

    @property
    def device_types(self) -> frozenset:
        return frozenset({self.spec.kind})

    @property
    def dtypes(self) -> frozenset:
        return self._dtypes

    def unavailable_reason(self) -> str | None:
        if self.spec.kind == "cuda" and not torch.cuda.is_available():
            return "no CUDA GPU"
        return extension.unavailable_reason(self.spec)

    def not_supported_reasons(self, op: str, tensors: Sequence[torch.Tensor]) -> list[str]:
        # A call this backend could never serve (another op or device) must not build the
        # extension just to be refused: those reasons come first.
        if op not in self.ops:
            return [f"does not implement {op}"]
        if tensors and tensors[0].device.type != self.spec.kind:  # the usual refusal, cheaply
            return [
                f"device type {tensors[0].device.type} not supported (supports {self.spec.kind})"
            ]
        reasons = super().not_supported_reasons(op, tensors)
        if not reasons and op in _STEPS and not all(t.is_contiguous() for t in tensors):
            reasons.append("a parameter, gradient or state tensor is not contiguous")
        return reasons

    # The compact linear: x is (N, C), values (nnz,), y is (N, R).

    @staticmethod
    def compact_linear_forward(x, values, index, bias):
        return torch.ops.sparse_tickets.spmm(x, index.row_ptr, index.col_idx, values, None, bias)

    @staticmethod
    def compact_linear_backward(grad_y, x, values, index, has_bias: bool, needs_grad: tuple):
        needs_x, needs_values, needs_bias = needs_grad
        grad_y = grad_y.contiguous()
        grad_x = (
            torch.ops.sparse_tickets.spmm(
                grad_y, index.t_row_ptr, index.t_col_idx, values, index.t_value_index, None
            )
            if needs_x
            else None
        )
        grad_values = (
            torch.ops.sparse_tickets.sddmm(grad_y, x, index.row_ptr, index.col_idx)
            if needs_values
            else None
        )
        grad_bias = grad_y.sum(0) if has_bias and needs_bias else None
        return grad_x, grad_values, grad_bias

    # The compact conv2d: x is (N, C, H, W), values (nnz,), y is (N, O, OH, OW).

    def compact_conv2d_forward(
        self, x, values, index, bias, stride, padding, dilation, groups, variant
    ):
        if self._direct_conv(variant):
            return conv.direct_forward(
                x, values, index, bias, stride, padding, dilation, groups, variant
            )
        return conv.im2col_forward(
            self.compact_linear_forward, x, values, index, bias, stride, padding, dilation, groups
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
        if self._direct_conv(variant):
            return conv.direct_backward(
                grad_y.contiguous(),
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
        return conv.im2col_backward(
            self.compact_linear_backward,
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
        )

    def _direct_conv(self, variant: str) -> bool:
        return self.spec.kind == "cpu" and variant in conv.DIRECT_VARIANTS

    # The fused optimizer steps (the arithmetic of ops/reference/optim.py, one pass each).

    @staticmethod
    def masked_sgd_step(
        params,
        grads,
        masks,
        momentum_buffer_list,
        *,
        weight_decay: float,
        momentum: float,
        lr: float,
        dampening: float,
        nesterov: bool,
        maximize: bool,
    ) -> None:
        for i, param in enumerate(params):
            buffer = momentum_buffer_list[i]
            first_step = momentum != 0 and buffer is None
            if first_step:
                buffer = torch.empty_like(param)
                momentum_buffer_list[i] = buffer
            elif buffer is None:
                buffer = param.new_empty(0)
            torch.ops.sparse_tickets.sgd_step_(
                param,
                grads[i],
                buffer,
                masks[i],
                lr,
                weight_decay,
                momentum,
                dampening,
                nesterov,
                maximize,
                first_step,
            )

    def masked_adam_step(
        self,
        params,
        grads,
        masks,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        state_steps,
        *,
        amsgrad: bool,
        beta1: float,
        beta2: float,
        lr: float,
        weight_decay: float,
        eps: float,
        maximize: bool,
        decoupled_weight_decay: bool,
    ) -> None:
        if self.spec.kind == "cpu":  # the whole list, counters included, in one call
            torch.ops.sparse_tickets.adam_steps_(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs if amsgrad else [],
                masks,
                state_steps,
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                amsgrad,
                maximize,
                decoupled_weight_decay,
            )
            return
        torch._foreach_add_(state_steps, 1.0)  # one call for every counter
        unused = params[0].new_empty(0) if params else None
        for i, param in enumerate(params):
            max_exp_avg_sq = max_exp_avg_sqs[i] if amsgrad else unused
            torch.ops.sparse_tickets.adam_step_(
                param,
                grads[i],
                exp_avgs[i],
                exp_avg_sqs[i],
                max_exp_avg_sq,
                masks[i],
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                state_steps[i].item(),
                amsgrad,
                maximize,
                decoupled_weight_decay,
            )


def _compact_linear_with_derivative(x, values, index, bias):
    return torch.ops.sparse_tickets.compact_linear(
        x,
        index.row_ptr,
        index.col_idx,
        index.t_row_ptr,
        index.t_col_idx,
        index.t_value_index,
        values,
        bias,
    )


cpu_backend = NativeBackend(extension.CPU, frozenset({torch.float32, torch.float64}))
cuda_backend = NativeBackend(
    extension.CUDA, frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16})
)
