"""One training step of a single layer: forward, backward (input and weight gradients, as for a
layer inside a network) and an Adam step, with the gradient of the output given.

Ours: a MaskedLinear with a random mask at the sparsity and MaskedAdam, in the dense-masked
mode through each backend, and in the compact mode (``compact``: ``set_mode("compact")``, the
kept values the only trained weights, on the auto-selected backends). Baselines: the plain
``nn.Linear`` with torch.optim.Adam (dense: no mask, timed once, at sparsity 0), and the same
masked by torch.nn.utils.prune (prune_style). The layer is the large 4096x4096 one at batch 64:
the size where a step is dominated by the weight, not by the framework.
"""

import torch
from torch import nn

import sparse_tickets
from benchmarks.measure import time_row
from benchmarks.networks import compact_training_info, prune_randomly, trained_with_adam
from benchmarks.profiles import profile_of
from benchmarks.providers import DENSE, PRUNE_STYLE, backend_names, compact_providers, prepare

LEARNING_RATE = 1e-3


def pytest_generate_tests(metafunc):
    profile = profile_of(metafunc.config)
    # A forced backend runs both ops of the step, so it must serve both.
    ours = [
        name
        for name in backend_names("masked_linear", profile.device, torch.float32)
        if name in backend_names("masked_adam_step", profile.device, torch.float32)
    ]
    ours += compact_providers(profile.device, torch.float32)
    cases, ids = [], []
    for shape in profile.train_step_shapes:
        cases.append((shape, 0.0, DENSE))
        ids.append(f"{shape.label}-s0.0-{DENSE}")
        for sparsity in profile.train_step_sparsities:
            for provider in ours + [PRUNE_STYLE]:
                cases.append((shape, sparsity, provider))
                ids.append(f"{shape.label}-s{sparsity}-{provider}")
    metafunc.parametrize("shape,sparsity,provider", cases, ids=ids)


def test_adam_step(benchmark, monkeypatch, profile, shape, sparsity, provider):
    device = profile.device
    network = sparse_tickets.masked(
        nn.Sequential(nn.Linear(shape.in_features, shape.out_features))
    ).to(device)
    masks = prune_randomly(network, 1.0 - sparsity)
    network, optimizer = trained_with_adam(network, provider, LEARNING_RATE)
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(
        shape.batch, shape.in_features, device=device, generator=generator, requires_grad=True
    )
    grad_y = torch.randn(shape.batch, shape.out_features, device=device, generator=generator)
    prepare(monkeypatch, provider, "masked_linear", [x] + list(masks.values()))

    def step():
        optimizer.zero_grad(set_to_none=True)
        x.grad = None
        network(x).backward(grad_y)
        optimizer.step()

    time_row(
        benchmark,
        step,
        op="train_step.adam",
        provider=provider,
        shape=shape.label,
        dtype=torch.float32,
        sparsity=sparsity,
        device=device,
        **compact_training_info(provider, network, x),
    )
