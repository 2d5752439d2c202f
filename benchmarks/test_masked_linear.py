"""Masked linear, forward and forward + backward: each backend and the compact mode
(``compact_linear``) against the baselines (dense ``F.linear``, prune-style
``F.linear(x, W * M)``, ``torch.sparse`` CSR) and SparseProp's SparseLinear (where installed),
on the layers of :mod:`benchmarks.shapes` at the sparsities of the profile.

Forward is inference (no input requires grad). Forward + backward computes the gradients of
the input and of the weight (for torch_csr and compact: of the kept values), as training does.
Dense does not look at the mask, so it is timed once per shape, at sparsity 0; compact starts
at the first sparsity above 0 (see ``providers.times_sparsity``).

The 2:4 rows (op ``masked_linear_2to4``, CUDA only) time the layers whose weights torch's 2:4
kernels take, in fp16 and bf16, with a 2:4 magnitude mask (50% sparse): the ``semi_structured``
backend (forced) against dense ``F.linear`` and the dense-masked reference. Its forward row is
inference (the weight compressed once); its forward + backward row compresses the weight at
every call, as a training step must after each weight update.
"""

import pytest

from benchmarks.measure import time_row
from benchmarks.profiles import TWO_FOUR_ON_CPU, profile_of
from benchmarks.providers import (
    DENSE,
    RANDOM,
    TWO_FOUR,
    TWO_FOUR_PROVIDERS,
    TWO_FOUR_SPARSITY,
    linear_case,
    linear_providers,
    linear_row,
    prepare,
    times_sparsity,
    two_four_shapes,
)


def pytest_generate_tests(metafunc):
    profile = profile_of(metafunc.config)
    cases, ids = [], []
    for shape in profile.linear_shapes:
        for dtype in profile.dtypes:
            # Sparsity outside, provider inside: the providers of one sparsity time one case.
            for sparsity in profile.sparsities:
                for provider in linear_providers(profile.device, dtype):
                    if not times_sparsity(provider, sparsity, profile.sparsities):
                        continue
                    cases.append((shape, dtype, sparsity, provider, RANDOM))
                    ids.append(f"{shape.label}-{str(dtype)[6:]}-s{sparsity}-{provider}")
    for dtype in profile.two_four_dtypes:
        for shape in two_four_shapes(profile.two_four_shapes, dtype):
            for provider in TWO_FOUR_PROVIDERS:
                # Dense is recorded at sparsity 0, as in the other rows: it ignores the mask.
                sparsity = 0.0 if provider == DENSE else TWO_FOUR_SPARSITY
                cases.append((shape, dtype, sparsity, provider, TWO_FOUR))
                ids.append(f"{shape.label}-{str(dtype)[6:]}-{TWO_FOUR}-{provider}")
    metafunc.parametrize("shape,dtype,sparsity,provider,pattern", cases, ids=ids)


def _case(shape, dtype, sparsity, pattern, device, requires_grad):
    if pattern == TWO_FOUR:
        if device != "cuda":
            pytest.skip(TWO_FOUR_ON_CPU)
        # Every provider of a 2:4 group times the one 50% case, dense included.
        sparsity = TWO_FOUR_SPARSITY
    return linear_case(
        shape.batch,
        shape.in_features,
        shape.out_features,
        sparsity,
        device,
        dtype,
        requires_grad,
        pattern,
    )


def _op(op_pass: str, pattern: str) -> str:
    return (
        f"masked_linear_{TWO_FOUR}.{op_pass}" if pattern == TWO_FOUR else f"masked_linear.{op_pass}"
    )


def test_forward(benchmark, monkeypatch, profile, shape, dtype, sparsity, provider, pattern):
    case = _case(shape, dtype, sparsity, pattern, profile.device, requires_grad=False)
    prepare(monkeypatch, provider, "masked_linear", (case.x, case.weight, case.mask))
    step, info = linear_row(provider, case, backward=False)
    time_row(
        benchmark,
        step,
        op=_op("forward", pattern),
        provider=provider,
        shape=shape.label,
        dtype=dtype,
        sparsity=sparsity,
        device=profile.device,
        **info,
    )


def test_forward_backward(
    benchmark, monkeypatch, profile, shape, dtype, sparsity, provider, pattern
):
    case = _case(shape, dtype, sparsity, pattern, profile.device, requires_grad=True)
    prepare(monkeypatch, provider, "masked_linear", (case.x, case.weight, case.mask))
    step, info = linear_row(provider, case, backward=True)
    time_row(
        benchmark,
        step,
        op=_op("forward_backward", pattern),
        provider=provider,
        shape=shape.label,
        dtype=dtype,
        sparsity=sparsity,
        device=profile.device,
        **info,
    )
