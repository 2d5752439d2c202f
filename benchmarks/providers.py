"""Every provider the suites compare, in one place: our backends, our compact mode, and the
baselines.

A provider is what computes a row: a registered backend of :mod:`sparse_tickets.ops` (forced
with ``SPARSE_TICKETS_BACKEND``) running the dense-masked mode, our compact mode, or a
baseline:

- ``compact``: the weight as its kept values plus a :class:`~sparse_tickets.compact.
  CompactIndex` of the mask, built once per mask (untimed), the values the trainable leaf;
  computed by ``compact_linear`` / ``compact_conv2d`` (networks: every masked layer switched
  with ``set_mode("compact")``) on whichever backend auto-selection picks, which the row
  records in ``extra_info["backend"]``.
- ``dense``: plain torch on the plain weight, no mask at all: the cost of not pruning.
- ``prune_style``: ``W * M`` materialised at every call, then plain torch: what
  torch.nn.utils.prune and every mask-multiplying lottery-ticket tool pay.
- ``torch_csr``: the weight as a ``torch.sparse`` CSR matrix, built once per mask (untimed),
  whose values are the trainable parameter.
- ``prune_style_fused``: the optimizer baseline with torch's fused step (where it exists).
- ``sparseprop`` (linear, conv2d): SparseProp's layers, the CPU peer to beat, on its fastest
  variant among those that compute the right numbers here (:mod:`benchmarks.sparseprop_peer`);
  skipped, with the reason, where it is not installed or cannot run.

Backends that serve only masks of one pattern (``semi_structured``: 2:4) are left out of the
rows with random masks, which they could never serve; the 2:4 rows of the masked linear time
them on 2:4 magnitude masks, against dense and the dense-masked reference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from sparse_tickets import ops
from sparse_tickets.compact import CompactIndex
from sparse_tickets.functional import compact_conv2d, compact_linear, masked_conv2d, masked_linear
from sparse_tickets.ops import semi_structured
from sparse_tickets.ops.semi_structured import weight_shape_reasons

from . import sparseprop_peer

COMPACT = "compact"
DENSE = "dense"
PRUNE_STYLE = "prune_style"
TORCH_CSR = "torch_csr"
PRUNE_STYLE_FUSED = "prune_style_fused"
SPARSEPROP = "sparseprop"
BASELINES = (DENSE, PRUNE_STYLE, TORCH_CSR, PRUNE_STYLE_FUSED, SPARSEPROP)
SEMI_STRUCTURED = "semi_structured"
# Backends that serve one mask pattern only: timed on masks of that pattern, not random ones.
PATTERN_BACKENDS = (SEMI_STRUCTURED,)

# The masked linear on a 2:4 magnitude mask (50% sparse): torch's 2:4 sparse kernels against
# dense F.linear and the dense-masked reference, on the layers those kernels take.
RANDOM, TWO_FOUR = "random", "2to4"
TWO_FOUR_SPARSITY = 0.5
TWO_FOUR_PROVIDERS = (SEMI_STRUCTURED, "reference", DENSE)


def backend_names(op: str, device: str, dtype: torch.dtype) -> list[str]:
    """The available backends that can serve ``op`` for ``dtype`` tensors on ``device``, in
    priority order. Backends registered later are picked up here without any change."""
    probe = [
        torch.empty(0, device=device, dtype=dtype),
        torch.empty(0, device=device, dtype=torch.bool),
    ]
    return [
        status.name
        for status in ops.backends()
        if status.available and not ops.get(status.name).not_supported_reasons(op, probe)
    ]


def compact_providers(device: str, dtype: torch.dtype) -> list[str]:
    """``[COMPACT]`` when some backend can run the compact linear of ``dtype`` on ``device``."""
    return [COMPACT] if backend_names("compact_linear", device, dtype) else []


def times_sparsity(provider: str, sparsity: float, sparsities: tuple) -> bool:
    """Whether a per-op suite times ``provider`` at ``sparsity`` (one of ``sparsities``).

    Dense never looks at the mask: timed once, at the first sparsity. Compact and SparseProp
    skip sparsity 0: a sparse weight at density 1 is the dense product computed as a sparse
    one, which no mode choice picks, and on the CPU it would be the slowest row of the run.
    """
    if provider == DENSE:
        return sparsity == sparsities[0]
    return not (provider in (COMPACT, SPARSEPROP) and sparsity == 0.0)


def force_backend(monkeypatch, name: str) -> None:
    """Make every masked op of the test run on backend ``name`` (undone after the test)."""
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, name)


def provider_kind(provider: str) -> str:
    """``baseline``, ``mode`` (our compact mode, on the auto-selected backend) or ``backend``."""
    if provider in BASELINES:
        return "baseline"
    return "mode" if provider == COMPACT else "backend"


def selected_backend(op: str, tensors) -> str:
    """The backend auto-selection (or ``SPARSE_TICKETS_BACKEND``) gives ``op`` on ``tensors``."""
    return ops.select(op, tensors).name


def backend_label(*names: str) -> str:
    """One label for the backends a row ran on: ``cpu``, or ``cpu + reference`` when its ops
    were served by different ones."""
    return " + ".join(dict.fromkeys(names))


class _CompactFormOnDemand:
    """What both cases share: the weight's compact form, built on first use (untimed)."""

    weight: torch.Tensor
    mask: torch.Tensor
    compact_form: tuple | None

    def compact(self) -> tuple[torch.Tensor, CompactIndex]:
        """``(values, index)`` of the weight, the values a leaf when the weight is one."""
        if self.compact_form is None:
            self.compact_form = _compact_form(self.weight, self.mask)
        return self.compact_form


@dataclass
class LinearCase(_CompactFormOnDemand):
    """The tensors of one masked linear call; ``csr_*`` hold the weight as CSR, prebuilt, and
    :meth:`compact` its compact form, built on first use."""

    x: torch.Tensor
    weight: torch.Tensor
    mask: torch.Tensor
    grad_y: torch.Tensor
    csr_crow: torch.Tensor
    csr_col: torch.Tensor
    csr_values: torch.Tensor
    compact_form: tuple | None = None

    def leaves(self) -> list[torch.Tensor]:
        """The tensors a backward writes gradients into (reset before each timed call)."""
        values = self.compact_form[0] if self.compact_form else None
        return [
            t
            for t in (self.x, self.weight, self.csr_values, values)
            if t is not None and t.requires_grad
        ]


def _compact_form(weight: torch.Tensor, mask: torch.Tensor) -> tuple:
    index = CompactIndex.from_mask(mask)
    values = index.gather(weight.detach()).requires_grad_(weight.requires_grad)
    return values, index


# One case at a time (a 4096x4096 case holds hundreds of MB): the suites walk the providers of
# a shape and sparsity one after another, and all of them time the same tensors.
@functools.lru_cache(maxsize=1)
def linear_case(
    batch: int,
    in_features: int,
    out_features: int,
    sparsity: float,
    device: str,
    dtype: torch.dtype,
    requires_grad: bool,
    pattern: str = RANDOM,
) -> LinearCase:
    """Random inputs, a mask pruning ``sparsity`` of the weight (``RANDOM``; ``TWO_FOUR``: the
    2:4 magnitude mask, 50% whatever ``sparsity`` says), the weight zeroed where pruned (as the
    masked layers keep it), and its CSR form. The same arguments return the same case as the
    call before (its tensors are read, never changed, by every provider)."""
    if pattern not in (RANDOM, TWO_FOUR):
        raise ValueError(f"pattern must be {RANDOM!r} or {TWO_FOUR!r}; got {pattern!r}")
    generator = torch.Generator(device=device).manual_seed(0)
    options = dict(device=device, dtype=dtype, generator=generator)
    x = torch.randn(batch, in_features, **options)
    weight = torch.randn(out_features, in_features, **options)
    mask = (
        two_four_magnitude_mask(weight)
        if pattern == TWO_FOUR
        else torch.rand(weight.shape, device=device, generator=generator) >= sparsity
    )
    weight.mul_(mask)
    csr = weight.to_sparse_csr() if dtype in (torch.float32, torch.float64) else None
    crow, col, values = (
        (csr.crow_indices(), csr.col_indices(), csr.values().clone())
        if csr is not None
        else (None, None, None)
    )
    for tensor in (x, weight, values):
        if tensor is not None:
            tensor.requires_grad_(requires_grad)
    grad_y = torch.randn(batch, out_features, **options)
    return LinearCase(x, weight, mask, grad_y, crow, col, values)


def _csr_linear(case: LinearCase) -> torch.Tensor:
    # (W_csr @ x^T)^T: sparse @ dense is the product torch's CSR serves best on every device,
    # and autograd reaches the CSR values through sparse_csr_tensor.
    weight = torch.sparse_csr_tensor(
        case.csr_crow, case.csr_col, case.csr_values, case.weight.shape, check_invariants=False
    )
    return (weight @ case.x.t()).t()


def _compact_linear(case: LinearCase) -> torch.Tensor:
    values, index = case.compact()
    return compact_linear(case.x, values, index)


LINEAR_BASELINES = {
    DENSE: lambda case: F.linear(case.x, case.weight),
    PRUNE_STYLE: lambda case: F.linear(case.x, case.weight * case.mask),
    TORCH_CSR: _csr_linear,
}


def linear_providers(device: str, dtype: torch.dtype) -> list[str]:
    """Backends, compact, then baselines, that can run a masked linear of ``dtype`` on
    ``device``.

    torch_csr runs in fp32/fp64 only: torch's CSR products (and the sampled product their
    backward needs) do not cover the half types on every device.
    """
    baselines = [
        name
        for name in LINEAR_BASELINES
        if name != TORCH_CSR or dtype in (torch.float32, torch.float64)
    ]
    backends = [
        name
        for name in backend_names("masked_linear", device, dtype)
        if name not in PATTERN_BACKENDS
    ]
    return backends + compact_providers(device, dtype) + baselines + [SPARSEPROP]


def two_four_shapes(shapes: tuple, dtype: torch.dtype) -> list:
    """The GEMM ``shapes`` whose weights torch's 2:4 kernels take in ``dtype``."""
    return [
        shape
        for shape in shapes
        if not weight_shape_reasons((shape.out_features, shape.in_features), dtype)
    ]


def two_four_magnitude_mask(weight: torch.Tensor) -> torch.Tensor:
    """The 2:4 mask that keeps the 2 largest |w| of every 4 consecutive inputs of each row
    (NVIDIA's recipe for sparse tensor cores: Mishra et al., "Accelerating Sparse Deep Neural
    Networks", arXiv:2104.08378, 2021)."""
    rows, cols = weight.shape
    groups = weight.detach().float().abs().reshape(rows, cols // 4, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=weight.device)
    return mask.scatter_(-1, keep, True).reshape(rows, cols)


def as_training_step(provider: str, fn):
    """``fn``, for ``semi_structured`` preceded by dropping its compressed weights: a training
    step changes the weight, so each step's forward compresses it again, and its time counts."""
    if provider != SEMI_STRUCTURED:
        return fn

    def step():
        semi_structured.clear_compressed()
        return fn()

    return step


def run_linear(provider: str, case: LinearCase) -> torch.Tensor:
    """``x @ (W ⊙ M)^T`` computed by ``provider`` (a backend must be forced beforehand)."""
    if provider == COMPACT:
        return _compact_linear(case)
    baseline = LINEAR_BASELINES.get(provider)
    return baseline(case) if baseline else masked_linear(case.x, case.weight, case.mask)


def linear_row(provider: str, case: LinearCase, backward: bool) -> tuple[Callable, dict]:
    """The call a masked linear row times (forward, or forward + backward into fresh
    gradients) and the row's own ``extra_info``; built untimed."""
    if provider == SPARSEPROP:
        return sparseprop_peer.linear_row(case, backward)
    if backward:
        step = as_training_step(
            provider, lambda: backward_into(run_linear(provider, case), case.grad_y, case.leaves())
        )
    else:

        def step():
            return run_linear(provider, case)

    return step, compact_row_info(provider, case)


@dataclass
class ConvCase(_CompactFormOnDemand):
    x: torch.Tensor
    weight: torch.Tensor
    mask: torch.Tensor
    grad_y: torch.Tensor
    padding: int
    stride: int
    compact_form: tuple | None = None

    def leaves(self) -> list[torch.Tensor]:
        values = self.compact_form[0] if self.compact_form else None
        return [t for t in (self.x, self.weight, values) if t is not None and t.requires_grad]


def conv_case(
    shape, sparsity: float, device: str, dtype: torch.dtype, requires_grad: bool
) -> ConvCase:
    """Random inputs for a :class:`~benchmarks.shapes.ConvShape`, weight zeroed where pruned."""
    generator = torch.Generator(device=device).manual_seed(0)
    options = dict(device=device, dtype=dtype, generator=generator)
    x = torch.randn(shape.batch, shape.in_channels, shape.size, shape.size, **options)
    weight = torch.randn(
        shape.out_channels, shape.in_channels, shape.kernel, shape.kernel, **options
    )
    mask = torch.rand(weight.shape, device=device, generator=generator) >= sparsity
    weight.mul_(mask)
    x.requires_grad_(requires_grad)
    weight.requires_grad_(requires_grad)
    grad_y = torch.randn(shape.batch, shape.out_channels, shape.out_size, shape.out_size, **options)
    return ConvCase(x, weight, mask, grad_y, shape.padding, shape.stride)


def _compact_conv(case: ConvCase) -> torch.Tensor:
    values, index = case.compact()
    return compact_conv2d(case.x, values, index, stride=case.stride, padding=case.padding)


CONV_BASELINES = {
    DENSE: lambda c: F.conv2d(c.x, c.weight, stride=c.stride, padding=c.padding),
    PRUNE_STYLE: lambda c: F.conv2d(c.x, c.weight * c.mask, stride=c.stride, padding=c.padding),
}


def conv_providers(device: str, dtype: torch.dtype) -> list[str]:
    """Backends, compact, then baselines, that can run a masked conv2d of ``dtype`` on
    ``device``."""
    return (
        backend_names("masked_conv2d", device, dtype)
        + compact_providers(device, dtype)
        + list(CONV_BASELINES)
        + [SPARSEPROP]
    )


def run_conv(provider: str, case: ConvCase) -> torch.Tensor:
    if provider == COMPACT:
        return _compact_conv(case)
    baseline = CONV_BASELINES.get(provider)
    if baseline:
        return baseline(case)
    return masked_conv2d(case.x, case.weight, case.mask, stride=case.stride, padding=case.padding)


def conv_row(provider: str, case: ConvCase, backward: bool) -> tuple[Callable, dict]:
    """The call a masked conv2d row times and the row's own ``extra_info`` (as
    :func:`linear_row`)."""
    if provider == SPARSEPROP:
        return sparseprop_peer.conv_row(case, backward)
    if backward:

        def step():
            backward_into(run_conv(provider, case), case.grad_y, case.leaves())
    else:

        def step():
            return run_conv(provider, case)

    return step, compact_row_info(provider, case)


def compact_row_info(provider: str, case) -> dict:
    """For the compact provider: build ``case``'s compact form now (untimed) and return the
    backend auto-selection gives it, as ``extra_info``; ``{}`` for every other provider."""
    if provider != COMPACT:
        return {}
    values, _ = case.compact()
    return {"backend": selected_backend("compact_linear", [case.x, values])}


def backward_into(y: torch.Tensor, grad_y: torch.Tensor, leaves: list[torch.Tensor]) -> None:
    """Backward of ``y`` with ``grad_y`` into fresh ``.grad``s (set to None first, as
    ``optimizer.zero_grad()`` does, so no call accumulates into the last one's)."""
    for leaf in leaves:
        leaf.grad = None
    y.backward(grad_y)


def prepare(monkeypatch, provider: str, op: str, tensors) -> None:
    """Force ``provider`` when it is a backend; skip the row, with the backend's reasons, when
    it cannot serve these tensors (a kernel's shape limits, say), and SparseProp's rows, with
    the reason, where it cannot run."""
    if provider == SPARSEPROP:
        reason = sparseprop_peer.skip_reason(tensors[0].device.type, tensors[0].dtype)
        if reason is not None:
            pytest.skip(reason)
        return
    if provider_kind(provider) != "backend":
        return
    reasons = ops.get(provider).not_supported_reasons(op, list(tensors))
    if reasons:
        pytest.skip(f"backend {provider} cannot run {op} here: {'; '.join(reasons)}")
    force_backend(monkeypatch, provider)
