"""Masked linear, forward + backward: each backend against dense F.linear and the prune-style
baseline (``W * M`` materialised every call, as torch.nn.utils.prune does), on LeNet-300-100's
first layer (784 -> 300) at its batch of 60.

    python -m pytest benchmarks --benchmark-enable --benchmark-group-by=param:sparsity
"""

import pytest
import torch
import torch.nn.functional as F

from sparse_tickets import ops
from sparse_tickets.functional import masked_linear

BATCH, IN_FEATURES, OUT_FEATURES = 60, 784, 300
SPARSITIES = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99]


def _inputs(sparsity):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, IN_FEATURES, generator=generator, requires_grad=True)
    weight = torch.randn(OUT_FEATURES, IN_FEATURES, generator=generator, requires_grad=True)
    mask = torch.rand(weight.shape, generator=generator) >= sparsity
    return x, weight, mask


def _forward_backward(linear, x, weight, mask):
    x.grad = weight.grad = None
    linear(x, weight, mask).sum().backward()


PROVIDERS = {
    "dense": lambda x, w, m: F.linear(x, w),
    "prune_style": lambda x, w, m: F.linear(x, w * m),
    "ours": masked_linear,
}


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_masked_linear_forward_backward(benchmark, provider, sparsity, monkeypatch):
    if provider == "ours":
        backend = ops.select("masked_linear", _inputs(sparsity))
        benchmark.extra_info["backend"] = backend.name
    benchmark.extra_info.update(device="cpu", threads=torch.get_num_threads(),
                                shape=f"{BATCH}x{IN_FEATURES}->{OUT_FEATURES}")
    benchmark(_forward_backward, PROVIDERS[provider], *_inputs(sparsity))
