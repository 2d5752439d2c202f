"""The ``sparseprop`` provider: SparseProp (Nikdan et al., ICML 2023), the published CPU state of
the art for sparse backpropagation, timed on the same cases as our compact mode.

Install: ``pip install pybind11 scipy && pip install --no-build-isolation sparseprop`` (its
build compiles AVX2 code with ``-march=native``). Without it, or on a GPU, or in another dtype
than float32 (the only one it computes in), the rows are skipped with the reason.

Its layers hold the kept weights in their own sparse formats, built from the masked weight
once per case (untimed), the values the trainable leaf. SparseLinear has one kernel; its conv
has two variants, chosen per layer in its own ``sparsify_conv2d_auto`` by timing them:

- ``batch``: the input transposed batch-minor, a kept weight's multiply-add vectorised over
  the batch (silently wrong when the batch is not a multiple of 8: batch 60, say);
- ``output_width``: vectorised over the output row (its forward needs stride 1; at stride 2 it
  runs the batch forward and the output-width backward, as SparseProp does).

Before a row is timed, every variant is checked against the float64 dense product: its output
and both gradients (input, kept weights) must match to a relative error of
:data:`TOLERANCE`. The row times the fastest correct variant (each correct one timed for a
few calls beforehand, outside the row, as SparseProp's own choice does) and records every
variant's verdict; a case where no variant is correct is skipped with the errors, never
reported as a speed.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

INSTALL = "pip install pybind11 scipy && pip install --no-build-isolation sparseprop"
# Relative to the largest magnitude of the reference: float32 arithmetic with -ffast-math over
# reductions of up to ~10^5 terms stays well inside it; a wrong variant is off by O(1).
TOLERANCE = 1e-3
LINEAR_VARIANTS = {"csr": None}
CONV_VARIANTS = {"batch": False, "output_width": True}
_CHOICE_CALLS = 3


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why SparseProp cannot be imported here (None when it can)."""
    try:
        import sparseprop.modules  # noqa: F401
    except Exception as error:  # noqa: BLE001  (ImportError, or its .so failing to load)
        return f"sparseprop is not importable ({type(error).__name__}: {error}); {INSTALL}"
    return None


def skip_reason(device: str, dtype: torch.dtype) -> str | None:
    """Why the sparseprop rows of ``device`` and ``dtype`` are skipped (None: they run)."""
    reason = unavailable_reason()
    if reason is not None:
        return reason
    if device != "cpu":
        return f"sparseprop runs on the CPU only, not {device}"
    if dtype != torch.float32:
        return f"sparseprop computes in float32 only, not {str(dtype).removeprefix('torch.')}"
    return None


def linear_module(weight: torch.Tensor, variant: str = "csr"):
    from sparseprop.modules.linear import SparseLinear

    if variant not in LINEAR_VARIANTS:
        raise ValueError(
            f"SparseProp linear variant {variant!r} is not one of {', '.join(LINEAR_VARIANTS)}"
        )
    return SparseLinear(weight.detach().float().contiguous())


def conv_module(weight: torch.Tensor, stride: int, padding: int, variant: str):
    from sparseprop.modules.conv2d import SparseConv2d

    if variant not in CONV_VARIANTS:
        raise ValueError(
            f"SparseProp conv variant {variant!r} is not one of {', '.join(CONV_VARIANTS)}"
        )
    return SparseConv2d(
        weight.detach().float().contiguous(),
        padding=padding,
        stride=stride,
        vectorizing_over_on=CONV_VARIANTS[variant],
    )


def dense_kept_gradient(module) -> torch.Tensor:
    """The gradient of ``module``'s kept values, laid out as its dense weight."""
    from sparseprop.modules.utils import from_csr_2d, from_sparse_format_conv2d

    grad = module.W_val.grad
    if hasattr(module, "OC"):
        return from_sparse_format_conv2d(
            grad, module.W_idx, (module.OC, module.IC, module.K, module.K)
        )
    return from_csr_2d(grad, module.W_idx, (module.N, module.M))


def variant_error(
    module,
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    grad_y: torch.Tensor,
    reference: Callable,
) -> float:
    """The largest relative error of ``module``'s output, input gradient and kept-weight
    gradient against ``reference(x, weight)`` computed in float64."""
    x = x.detach().float().requires_grad_(True)
    module.W_val.requires_grad_(True)
    module.W_val.grad = None
    y = module(x)
    y.backward(grad_y.float())
    x64 = x.detach().double().requires_grad_(True)
    w64 = (weight.detach().double() * mask).requires_grad_(True)
    y64 = reference(x64, w64)
    y64.backward(grad_y.double())
    pairs = ((y, y64), (x.grad, x64.grad), (dense_kept_gradient(module), w64.grad * mask))
    return max(_relative_error(ours, expected) for ours, expected in pairs)


def _relative_error(ours: torch.Tensor, expected: torch.Tensor) -> float:
    if ours is None or ours.shape != expected.shape:
        return float("inf")
    scale = expected.abs().max().item() or 1.0
    return ((ours.double() - expected).abs().max().item()) / scale


def checked_variants(modules: dict, x, weight, mask, grad_y, reference) -> dict:
    """``{variant: relative error}`` of every variant (built modules by name)."""
    return {
        name: variant_error(module, x, weight, mask, grad_y, reference)
        for name, module in modules.items()
    }


def _step(module, x: torch.Tensor, grad_y: torch.Tensor, backward: bool) -> Callable[[], None]:
    x = x.detach().float().requires_grad_(backward)
    module.W_val.requires_grad_(backward)
    grad_y = grad_y.float()

    def forward():
        return module(x)

    def forward_backward():
        x.grad = None
        module.W_val.grad = None
        module(x).backward(grad_y)

    return forward_backward if backward else forward


def _fastest(steps: dict) -> str:
    medians = {}
    for name, step in steps.items():
        times = []
        for _ in range(_CHOICE_CALLS):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    return min(medians, key=medians.get)


def prepared(
    modules: dict, x, weight, mask, grad_y, reference, backward: bool
) -> tuple[Callable[[], None], dict]:
    """The timed step of the fastest correct variant among ``modules`` and the row's
    ``extra_info``; skips the row when no variant is correct."""
    errors = checked_variants(modules, x, weight, mask, grad_y, reference)
    correct = [name for name, error in errors.items() if error <= TOLERANCE]
    wrong = {name: error for name, error in errors.items() if error > TOLERANCE}
    if not correct:
        pytest.skip(
            "no SparseProp variant is correct here (relative error "
            + ", ".join(f"{name} {error:.3g}" for name, error in wrong.items())
            + f"; tolerance {TOLERANCE})"
        )
    steps = {name: _step(modules[name], x, grad_y, backward) for name in correct}
    variant = _fastest(steps) if len(steps) > 1 else correct[0]
    info = {
        "variant": variant,
        "variants_correct": correct,
        "variants_wrong": {name: float(error) for name, error in wrong.items()},
    }
    return steps[variant], info


def linear_row(case, backward: bool) -> tuple[Callable[[], None], dict]:
    """SparseProp's step on a :class:`~benchmarks.providers.LinearCase` (see the module)."""
    modules = {name: linear_module(case.weight, name) for name in LINEAR_VARIANTS}
    return prepared(
        modules, case.x, case.weight, case.mask, case.grad_y, lambda x, w: F.linear(x, w), backward
    )


def conv_row(case, backward: bool) -> tuple[Callable[[], None], dict]:
    """SparseProp's step on a :class:`~benchmarks.providers.ConvCase` (see the module)."""
    modules = {
        name: conv_module(case.weight, case.stride, case.padding, name) for name in CONV_VARIANTS
    }
    return prepared(
        modules,
        case.x,
        case.weight,
        case.mask,
        case.grad_y,
        lambda x, w: F.conv2d(x, w, stride=case.stride, padding=case.padding),
        backward,
    )
