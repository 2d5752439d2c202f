"""Masked conv2d, forward and forward + backward: each backend and the compact mode
(``compact_conv2d``: the direct sparse convolution on the CPU, im2col around the compact
linear elsewhere) against dense ``F.conv2d``, prune-style ``F.conv2d(x, W * M)`` and
SparseProp's SparseConv2d (where installed: its fastest variant among those correct on the
shape, see :mod:`benchmarks.sparseprop_peer`), on the Conv-6, VGG-19 and ResNet-20 layers of
:mod:`benchmarks.shapes` at their batch sizes.

Forward is inference; forward + backward computes the input and weight gradients. Dense does
not look at the mask, so it is timed once per shape, at sparsity 0; compact starts at the first
sparsity above 0 (see ``providers.times_sparsity``).
"""

from benchmarks.measure import time_row
from benchmarks.profiles import profile_of
from benchmarks.providers import conv_case, conv_providers, conv_row, prepare, times_sparsity


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
    step, info = conv_row(provider, case, backward=False)
    time_row(
        benchmark,
        step,
        op="masked_conv2d.forward",
        provider=provider,
        shape=shape.label,
        dtype=dtype,
        sparsity=sparsity,
        device=profile.device,
        **info,
    )


def test_forward_backward(benchmark, monkeypatch, profile, shape, dtype, sparsity, provider):
    case = conv_case(shape, sparsity, profile.device, dtype, requires_grad=True)
    prepare(monkeypatch, provider, "masked_conv2d", (case.x, case.weight, case.mask))
    step, info = conv_row(provider, case, backward=True)
    time_row(
        benchmark,
        step,
        op="masked_conv2d.forward_backward",
        provider=provider,
        shape=shape.label,
        dtype=dtype,
        sparsity=sparsity,
        device=profile.device,
        **info,
    )
