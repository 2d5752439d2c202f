"""Masked conv2d, forward and forward + backward: each backend and the compact mode
(``compact_conv2d``: the direct sparse convolution on the CPU, im2col around the compact
linear elsewhere) against dense ``F.conv2d`` and
prune-style ``F.conv2d(x, W * M)``, on the Conv-6, VGG-19 and ResNet-20 layers of
:mod:`benchmarks.shapes` at their batch sizes.

Forward is inference; forward + backward computes the input and weight gradients. Dense does
not look at the mask, so it is timed once per shape, at sparsity 0; compact starts at the first
sparsity above 0 (see ``providers.times_sparsity``).
"""

from benchmarks.measure import time_row
from benchmarks.profiles import profile_of
from benchmarks.providers import (backward_into, compact_row_info, conv_case, conv_providers,
                                  prepare, run_conv, times_sparsity)


def pytest_generate_tests(metafunc):
    profile = profile_of(metafunc.config)
    cases, ids = [], []
    for shape in profile.conv_shapes:
        for dtype in profile.dtypes:
            for provider in conv_providers(profile.device, dtype):
                for sparsity in profile.sparsities:
                    if not times_sparsity(provider, sparsity, profile.sparsities):
                        continue
                    cases.append((shape, dtype, sparsity, provider))
                    ids.append(f"{shape.label}-{str(dtype)[6:]}-s{sparsity}-{provider}")
    metafunc.parametrize("shape,dtype,sparsity,provider", cases, ids=ids)


def test_forward(benchmark, monkeypatch, profile, shape, dtype, sparsity, provider):
    case = conv_case(shape, sparsity, profile.device, dtype, requires_grad=False)
    prepare(monkeypatch, provider, "masked_conv2d", (case.x, case.weight, case.mask))
    time_row(benchmark, lambda: run_conv(provider, case), op="masked_conv2d.forward",
             provider=provider, shape=shape.label, dtype=dtype, sparsity=sparsity,
             device=profile.device, **compact_row_info(provider, case))


def test_forward_backward(benchmark, monkeypatch, profile, shape, dtype, sparsity, provider):
    case = conv_case(shape, sparsity, profile.device, dtype, requires_grad=True)
    prepare(monkeypatch, provider, "masked_conv2d", (case.x, case.weight, case.mask))
    time_row(benchmark,
             lambda: backward_into(run_conv(provider, case), case.grad_y, case.leaves()),
             op="masked_conv2d.forward_backward", provider=provider, shape=shape.label,
             dtype=dtype, sparsity=sparsity, device=profile.device,
             **compact_row_info(provider, case))
