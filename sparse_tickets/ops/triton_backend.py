"""The triton backend: the masked linear as Triton kernels (kernels/triton/masked_matmul.py).

triton is imported on first use, never by ``import sparse_tickets``. The backend serves only
when forced with ``SPARSE_TICKETS_BACKEND=triton``: its kernels are tested against the reference
in triton's interpreter, but not yet run or timed on a GPU, and auto-selection must only ever
pick a path measured to be faster. On the CPU it runs the kernels in the interpreter when
``TRITON_INTERPRET=1`` is set (before triton is first imported): that is how they are tested
without a GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Optional, Sequence

import torch

from .dispatch import Backend

# Offsets inside the kernels are 32-bit: larger tensors go to another backend.
_MAX_NUMEL = 2**31 - 1


def interpreter_enabled() -> bool:
    """Whether ``TRITON_INTERPRET`` asks triton to run kernels on the CPU (read at call time)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


class TritonBackend(Backend):
    name = "triton"
    ops = frozenset({"masked_linear"})
    dtypes = frozenset({torch.float32, torch.float16, torch.bfloat16})
    auto_select = False  # until validated and measured on a GPU (see the module docstring)

    @property
    def device_types(self) -> frozenset:
        # Read at call time: the interpreter is switched on by the environment, not by us.
        return frozenset({"cuda", "cpu"}) if interpreter_enabled() else frozenset({"cuda"})

    def unavailable_reason(self) -> Optional[str]:
        if not _importable("triton"):
            return "triton is not installed"
        if not _importable("kernels"):
            return "the kernels package is not importable (run from the source tree)"
        if not torch.cuda.is_available() and not interpreter_enabled():
            return "no CUDA GPU and TRITON_INTERPRET is not set"
        return None

    def not_supported_reasons(self, op: str, tensors: Sequence[torch.Tensor]) -> list[str]:
        reasons = super().not_supported_reasons(op, tensors)
        if reasons:
            return reasons
        if any(t.numel() > _MAX_NUMEL for t in tensors):
            reasons.append(f"a tensor has more than {_MAX_NUMEL} elements (32-bit offsets)")
        return reasons

    def masked_linear_forward(self, x2d, weight, mask, bias):
        # y = x @ (W ⊙ M)^T + b
        return _kernels().masked_linear_forward(x2d, weight, mask, bias)

    def masked_linear_backward(self, grad_y, x2d, weight, mask, has_bias, needs_grad):
        # dx = dy @ (W ⊙ M);  dW = (dy^T @ x) ⊙ M;  db = sum_n dy
        needs_x, needs_weight, needs_bias = needs_grad
        kernels = _kernels()
        grad_x = kernels.masked_linear_input_grad(grad_y, weight, mask) if needs_x else None
        grad_weight = kernels.masked_linear_weight_grad(grad_y, x2d, mask) if needs_weight else None
        # A plain column sum: nothing masked about it, and torch's reduction is already fast.
        grad_bias = grad_y.sum(0) if has_bias and needs_bias else None
        return grad_x, grad_weight, grad_bias


@functools.lru_cache(maxsize=None)
def _importable(module: str) -> bool:
    # Cached: auto-selection asks on every call of every layer, and a search of sys.path for a
    # missing module is not free; what is installed does not change while the process runs.
    return importlib.util.find_spec(module) is not None


def _kernels():
    """The kernel module, imported (and triton with it) on first use."""
    try:
        from kernels.triton import masked_matmul
    except ImportError as error:
        raise ImportError(f"the triton backend needs the 'kernels' package next to "
                          f"sparse_tickets (from the source tree): {error}") from error
    return masked_matmul
