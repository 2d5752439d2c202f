"""Every provider the suites compare, in one place: our backends and the baselines.

A provider is what computes a row: a registered backend of :mod:`sparse_tickets.ops` (forced
with ``SPARSE_TICKETS_BACKEND``), or a baseline:

- ``dense``: plain torch on the plain weight, no mask at all: the cost of not pruning.
- ``prune_style``: ``W * M`` materialised at every call, then plain torch: what
  torch.nn.utils.prune and every mask-multiplying lottery-ticket tool pay.
- ``torch_csr``: the weight as a ``torch.sparse`` CSR matrix, built once per mask (untimed),
  whose values are the trainable parameter.
- ``prune_style_fused``: the optimizer baseline with torch's fused step (where it exists).
"""

from __future__ import annotations

from dataclasses import dataclass
import pytest
import torch
import torch.nn.functional as F

from sparse_tickets import ops
from sparse_tickets.functional import masked_conv2d, masked_linear

DENSE = "dense"
PRUNE_STYLE = "prune_style"
TORCH_CSR = "torch_csr"
PRUNE_STYLE_FUSED = "prune_style_fused"
BASELINES = (DENSE, PRUNE_STYLE, TORCH_CSR, PRUNE_STYLE_FUSED)


def backend_names(op: str, device: str, dtype: torch.dtype) -> list[str]:
    """The available backends that can serve ``op`` for ``dtype`` tensors on ``device``, in
    priority order. Backends registered later are picked up here without any change."""
    probe = [torch.empty(0, device=device, dtype=dtype),
             torch.empty(0, device=device, dtype=torch.bool)]
    return [status.name for status in ops.backends()
            if status.available and not ops.get(status.name).not_supported_reasons(op, probe)]


def force_backend(monkeypatch, name: str) -> None:
    """Make every masked op of the test run on backend ``name`` (undone after the test)."""
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, name)


def provider_kind(provider: str) -> str:
    return "baseline" if provider in BASELINES else "backend"


@dataclass
class LinearCase:
    """The tensors of one masked linear call; ``csr_*`` hold the weight as CSR, prebuilt."""

    x: torch.Tensor
    weight: torch.Tensor
    mask: torch.Tensor
    grad_y: torch.Tensor
    csr_crow: torch.Tensor
    csr_col: torch.Tensor
    csr_values: torch.Tensor

    def leaves(self) -> list[torch.Tensor]:
        """The tensors a backward writes gradients into (reset before each timed call)."""
        return [t for t in (self.x, self.weight, self.csr_values) if t.requires_grad]


def linear_case(batch: int, in_features: int, out_features: int, sparsity: float,
                device: str, dtype: torch.dtype, requires_grad: bool) -> LinearCase:
    """Random inputs, a random mask pruning ``sparsity`` of the weight, the weight zeroed
    where pruned (as the masked layers keep it), and its CSR form."""
    generator = torch.Generator(device=device).manual_seed(0)
    options = dict(device=device, dtype=dtype, generator=generator)
    x = torch.randn(batch, in_features, **options)
    weight = torch.randn(out_features, in_features, **options)
    mask = torch.rand(weight.shape, device=device, generator=generator) >= sparsity
    weight.mul_(mask)
    csr = weight.to_sparse_csr() if dtype in (torch.float32, torch.float64) else None
    crow, col, values = ((csr.crow_indices(), csr.col_indices(), csr.values().clone())
                         if csr is not None else (None, None, None))
    for tensor in (x, weight, values):
        if tensor is not None:
            tensor.requires_grad_(requires_grad)
    grad_y = torch.randn(batch, out_features, **options)
    return LinearCase(x, weight, mask, grad_y, crow, col, values)


def _csr_linear(case: LinearCase) -> torch.Tensor:
    # (W_csr @ x^T)^T: sparse @ dense is the product torch's CSR serves best on every device,
    # and autograd reaches the CSR values through sparse_csr_tensor.
    weight = torch.sparse_csr_tensor(case.csr_crow, case.csr_col, case.csr_values,
                                     case.weight.shape, check_invariants=False)
    return (weight @ case.x.t()).t()


LINEAR_BASELINES = {
    DENSE: lambda case: F.linear(case.x, case.weight),
    PRUNE_STYLE: lambda case: F.linear(case.x, case.weight * case.mask),
    TORCH_CSR: _csr_linear,
}


def linear_providers(device: str, dtype: torch.dtype) -> list[str]:
    """Backends, then baselines, that can run a masked linear of ``dtype`` on ``device``.

    torch_csr runs in fp32/fp64 only: torch's CSR products (and the sampled product their
    backward needs) do not cover the half types on every device.
    """
    baselines = [name for name in LINEAR_BASELINES
                 if name != TORCH_CSR or dtype in (torch.float32, torch.float64)]
    return backend_names("masked_linear", device, dtype) + baselines


def run_linear(provider: str, case: LinearCase) -> torch.Tensor:
    """``x @ (W ⊙ M)^T`` computed by ``provider`` (a backend must be forced beforehand)."""
    baseline = LINEAR_BASELINES.get(provider)
    return baseline(case) if baseline else masked_linear(case.x, case.weight, case.mask)


@dataclass
class ConvCase:
    x: torch.Tensor
    weight: torch.Tensor
    mask: torch.Tensor
    grad_y: torch.Tensor
    padding: int
    stride: int

    def leaves(self) -> list[torch.Tensor]:
        return [t for t in (self.x, self.weight) if t.requires_grad]


def conv_case(shape, sparsity: float, device: str, dtype: torch.dtype,
              requires_grad: bool) -> ConvCase:
    """Random inputs for a :class:`~benchmarks.shapes.ConvShape`, weight zeroed where pruned."""
    generator = torch.Generator(device=device).manual_seed(0)
    options = dict(device=device, dtype=dtype, generator=generator)
    x = torch.randn(shape.batch, shape.in_channels, shape.size, shape.size, **options)
    weight = torch.randn(shape.out_channels, shape.in_channels, shape.kernel, shape.kernel,
                         **options)
    mask = torch.rand(weight.shape, device=device, generator=generator) >= sparsity
    weight.mul_(mask)
    x.requires_grad_(requires_grad)
    weight.requires_grad_(requires_grad)
    grad_y = torch.randn(shape.batch, shape.out_channels, shape.out_size, shape.out_size,
                         **options)
    return ConvCase(x, weight, mask, grad_y, shape.padding, shape.stride)


CONV_BASELINES = {
    DENSE: lambda c: F.conv2d(c.x, c.weight, stride=c.stride, padding=c.padding),
    PRUNE_STYLE: lambda c: F.conv2d(c.x, c.weight * c.mask, stride=c.stride, padding=c.padding),
}


def conv_providers(device: str, dtype: torch.dtype) -> list[str]:
    """Backends, then baselines, that can run a masked conv2d of ``dtype`` on ``device``."""
    return backend_names("masked_conv2d", device, dtype) + list(CONV_BASELINES)


def run_conv(provider: str, case: ConvCase) -> torch.Tensor:
    baseline = CONV_BASELINES.get(provider)
    if baseline:
        return baseline(case)
    return masked_conv2d(case.x, case.weight, case.mask, stride=case.stride,
                         padding=case.padding)


def backward_into(y: torch.Tensor, grad_y: torch.Tensor, leaves: list[torch.Tensor]) -> None:
    """Backward of ``y`` with ``grad_y`` into fresh ``.grad``s (set to None first, as
    ``optimizer.zero_grad()`` does, so no call accumulates into the last one's)."""
    for leaf in leaves:
        leaf.grad = None
    y.backward(grad_y)


def prepare(monkeypatch, provider: str, op: str, tensors) -> None:
    """Force ``provider`` when it is a backend; skip the row, with the backend's reasons, when
    it cannot serve these tensors (a kernel's shape limits, say)."""
    if provider_kind(provider) != "backend":
        return
    reasons = ops.get(provider).not_supported_reasons(op, list(tensors))
    if reasons:
        pytest.skip(f"backend {provider} cannot run {op} here: {'; '.join(reasons)}")
    force_backend(monkeypatch, provider)
