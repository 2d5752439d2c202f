"""Masked linear, forward and forward + backward: each backend and the compact mode
(``compact_linear``) against the baselines (dense ``F.linear``, prune-style
``F.linear(x, W * M)``, ``torch.sparse`` CSR), on the layers of :mod:`benchmarks.shapes` at the
sparsities of the profile.

Forward is inference (no input requires grad). Forward + backward computes the gradients of
the input and of the weight (for torch_csr and compact: of the kept values), as training does.
Dense does not look at the mask, so it is timed once per shape, at sparsity 0; compact starts
at the first sparsity above 0 (see ``providers.times_sparsity``).
"""

from benchmarks.measure import time_row
from benchmarks.profiles import profile_of
from benchmarks.providers import (backward_into, compact_row_info, linear_case,
                                  linear_providers, prepare, run_linear, times_sparsity)


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
                    cases.append((shape, dtype, sparsity, provider))
                    ids.append(f"{shape.label}-{str(dtype)[6:]}-s{sparsity}-{provider}")
    metafunc.parametrize("shape,dtype,sparsity,provider", cases, ids=ids)


def _case(shape, dtype, sparsity, device, requires_grad):
    return linear_case(shape.batch, shape.in_features, shape.out_features, sparsity, device,
                       dtype, requires_grad)


def test_forward(benchmark, monkeypatch, profile, shape, dtype, sparsity, provider):
    case = _case(shape, dtype, sparsity, profile.device, requires_grad=False)
    prepare(monkeypatch, provider, "masked_linear", (case.x, case.weight, case.mask))
    time_row(benchmark, lambda: run_linear(provider, case), op="masked_linear.forward",
             provider=provider, shape=shape.label, dtype=dtype, sparsity=sparsity,
             device=profile.device, **compact_row_info(provider, case))


def test_forward_backward(benchmark, monkeypatch, profile, shape, dtype, sparsity, provider):
    case = _case(shape, dtype, sparsity, profile.device, requires_grad=True)
    prepare(monkeypatch, provider, "masked_linear", (case.x, case.weight, case.mask))
    time_row(benchmark,
             lambda: backward_into(run_linear(provider, case), case.grad_y, case.leaves()),
             op="masked_linear.forward_backward", provider=provider, shape=shape.label,
             dtype=dtype, sparsity=sparsity, device=profile.device,
             **compact_row_info(provider, case))
