"""The triton backend: the masked linear as Triton kernels
(sparse_tickets.kernels.triton.masked_matmul).

triton is imported on first use, never by ``import sparse_tickets``. The backend serves only
when forced with ``SPARSE_TICKETS_BACKEND=triton``: its kernels are tested against the reference
in triton's interpreter, but not yet run or timed on a GPU, and auto-selection must only ever
pick a path measured to be faster. On the CPU it runs the kernels in the interpreter when
``TRITON_INTERPRET=1`` is set (before triton is first imported): that is how they are tested
without a GPU.

No size is refused: the kernels compute offsets in int64 and launch 1-D grids, so an output, a
gradient or the conv's im2col buffer past 2^31 elements is served like a small one (see
sparse_tickets.kernels.triton.masked_matmul); the optimizer steps address through int64 tables.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence

import torch

from .. import settings
from .base import Backend


def interpreter_enabled() -> bool:
    """Whether ``TRITON_INTERPRET`` asks triton to run kernels on the CPU (read at call time)."""
    return settings.triton_interpret()


class TritonBackend(Backend):
    name = "triton"
    dtypes = frozenset({torch.float32, torch.float16, torch.bfloat16})
    auto_select = False  # until validated and measured on a GPU (see the module docstring)

    @property
    def device_types(self) -> frozenset:
        # Read at call time: the interpreter is switched on by the environment, not by us.
        return frozenset({"cuda", "cpu"}) if interpreter_enabled() else frozenset({"cuda"})

    def unavailable_reason(self) -> str | None:
        if not _importable("triton"):
            return (
                "triton is not installed (pip install triton; its wheels exist for Linux "
                "x86-64 and aarch64)"
            )
        if not _importable("sparse_tickets.kernels"):
            return (
                "sparse_tickets.kernels is not importable (reinstall the package: pip install -e .)"
            )
        if not torch.cuda.is_available() and not interpreter_enabled():
            return "no CUDA GPU and TRITON_INTERPRET is not set"
        return None

    def not_supported_reasons(self, op: str, tensors: Sequence[torch.Tensor]) -> list[str]:
        reasons = super().not_supported_reasons(op, tensors)
        if reasons:
            return reasons
        # masked_conv2d passes (x, weight, mask, bias): fewer weight input channels than x has
        # means groups > 1, which the im2col lowering does not cover.
        if (
            op == "masked_conv2d"
            and tensors[0].dim() == 4
            and (tensors[0].shape[1] != tensors[1].shape[1])
        ):
            reasons.append(
                "grouped convolution (groups > 1) is not served; im2col covers groups == 1"
            )
        return reasons

    def masked_linear_forward(self, x, weight, mask, bias):
        # y = x @ (W ⊙ M)^T + b
        return _kernels().masked_linear_forward(x, weight, mask, bias)

    def masked_linear_backward(self, grad_y, x, weight, mask, has_bias, needs_grad):
        # dx = dy @ (W ⊙ M);  dW = (dy^T @ x) ⊙ M;  db = sum_n dy
        needs_x, needs_weight, needs_bias = needs_grad
        kernels = _kernels()
        grad_x = kernels.masked_linear_input_grad(grad_y, weight, mask) if needs_x else None
        grad_weight = kernels.masked_linear_weight_grad(grad_y, x, mask) if needs_weight else None
        # A plain column sum: nothing masked about it, and torch's reduction is already fast.
        grad_bias = grad_y.sum(0) if has_bias and needs_bias else None
        return grad_x, grad_weight, grad_bias

    def masked_conv2d_forward(self, x, weight, mask, bias, stride, padding, dilation, groups):
        # y = conv2d(x, W ⊙ M) + b, as im2col rows @ (W ⊙ M)^T on the matmul kernels
        return _conv_kernels().masked_conv2d_forward(
            x, weight, mask, bias, stride, padding, dilation
        )

    def masked_conv2d_backward(
        self, grad_y, x, weight, mask, has_bias, needs_grad, stride, padding, dilation, groups
    ):
        # dx = col2im(dy @ (W ⊙ M));  dW = (dy^T @ cols) ⊙ M;  db = sum dy
        needs_x, needs_weight, needs_bias = needs_grad
        conv = _conv_kernels()
        geometry = (stride, padding, dilation)
        grad_x = (
            conv.masked_conv2d_input_grad(grad_y, x.shape, weight, mask, *geometry)
            if needs_x
            else None
        )
        grad_weight = (
            conv.masked_conv2d_weight_grad(grad_y, x, weight.shape, mask, *geometry)
            if needs_weight
            else None
        )
        grad_bias = grad_y.sum((0, 2, 3)) if has_bias and needs_bias else None
        return grad_x, grad_weight, grad_bias

    def masked_sgd_step(
        self,
        params,
        grads,
        masks,
        momentum_buffer_list,
        *,
        weight_decay,
        momentum,
        lr,
        dampening,
        nesterov,
        maximize,
    ):
        # One launch per parameter dtype.
        _optim_kernels().masked_sgd_step(
            params,
            grads,
            masks,
            momentum_buffer_list,
            weight_decay=weight_decay,
            momentum=momentum,
            lr=lr,
            dampening=dampening,
            nesterov=nesterov,
            maximize=maximize,
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
        amsgrad,
        beta1,
        beta2,
        lr,
        weight_decay,
        eps,
        maximize,
        decoupled_weight_decay,
    ):
        # One launch per parameter dtype.
        _optim_kernels().masked_adam_step(
            params,
            grads,
            masks,
            exp_avgs,
            exp_avg_sqs,
            max_exp_avg_sqs,
            state_steps,
            amsgrad=amsgrad,
            beta1=beta1,
            beta2=beta2,
            lr=lr,
            weight_decay=weight_decay,
            eps=eps,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )


@functools.cache
def _importable(module: str) -> bool:
    # Cached: auto-selection asks on every call of every layer, and a search of sys.path for a
    # missing module is not free; what is installed does not change while the process runs.
    return importlib.util.find_spec(module) is not None


def _optim_kernels():
    """The fused optimizer steps, imported (with triton) on first use."""
    _kernels()  # the same import, with its error message
    from sparse_tickets.kernels.triton import masked_optim

    return masked_optim


def _conv_kernels():
    """The conv lowering onto the matmul kernels, imported (with triton) on first use."""
    _kernels()  # the same import, with its error message
    from sparse_tickets.kernels.triton import masked_conv

    return masked_conv


def _kernels():
    """The kernel module, imported (and triton with it) on first use."""
    try:
        from sparse_tickets.kernels.triton import masked_matmul
    except ImportError as error:
        raise ImportError(
            f"the triton backend needs triton and sparse_tickets.kernels "
            f"(pip install -e . installs both): {error}"
        ) from error
    return masked_matmul
