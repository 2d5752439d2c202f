"""One IMP level's training time per 1,000 iterations as the density falls, on synthetic data.

Each call runs ``model.iterations`` real training steps (forward, cross-entropy, backward,
optimizer step) on batches prepared beforehand; the report scales the median to 1,000
iterations. Ours: the masked layers and MaskedAdam, random masks at the density, in the
dense-masked mode through each backend, and in the compact mode (``compact``: every masked
layer ``set_mode("compact")`` once its mask is set, on the auto-selected backends).
Prune-style: the same weights in plain torch layers masked by torch.nn.utils.prune, with
torch.optim.Adam. Dense: the plain network with no pruning at all, timed at density 1 only;
``density x dense`` is the ideal a level could cost.

MLPs run everywhere; of the conv nets, Conv-2 on the CPU, Conv-6 and ResNet-20 on a GPU
(``profiles.py``).
"""

import torch
import torch.nn.functional as F

import sparse_tickets
from benchmarks.measure import time_row
from benchmarks.networks import (
    compact_training_info,
    masked_network,
    prune_randomly,
    trained_with_adam,
)
from benchmarks.profiles import profile_of
from benchmarks.providers import DENSE, PRUNE_STYLE, backend_names, compact_providers, prepare

LEARNING_RATE = 1.2e-3  # the paper's Adam rate for LeNet


def pytest_generate_tests(metafunc):
    profile = profile_of(metafunc.config)
    mlp = metafunc.function.__name__ == "test_train_mlp"
    models = profile.mlp_models if mlp else profile.conv_net_models
    # A forced backend runs every masked op of the step, so it must serve them all.
    ops_used = ("masked_linear", "masked_adam_step") + (() if mlp else ("masked_conv2d",))
    ours = [
        name
        for name in backend_names(ops_used[0], profile.device, torch.float32)
        if all(name in backend_names(op, profile.device, torch.float32) for op in ops_used[1:])
    ]
    ours += compact_providers(profile.device, torch.float32)
    cases, ids = [], []
    for model in models:
        for density in profile.densities:
            providers = ours + [PRUNE_STYLE] + ([DENSE] if density == 1.0 else [])
            for provider in providers:
                cases.append((model, density, provider))
                ids.append(f"{model.name}-d{density}-{provider}")
    metafunc.parametrize("model,density,provider", cases, ids=ids)


def _batches(model, device):
    data = sparse_tickets.data.load(
        "synthetic",
        input_shape=model.input_shape,
        train_size=model.batch * model.iterations,
        val_size=0,
        test_size=0,
    )
    order = torch.arange(len(data.train)).split(model.batch)
    return [tuple(t.to(device) for t in data.train.batch(indices)) for indices in order]


def _time_training(benchmark, monkeypatch, profile, model, density, provider):
    network = masked_network(model, profile.device)
    masks = prune_randomly(network, density)
    network, optimizer = trained_with_adam(network, provider, LEARNING_RATE)
    batches = _batches(model, profile.device)
    prepare(monkeypatch, provider, "masked_linear", [batches[0][0]] + list(masks.values()))

    def train_iterations():
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(network(x), y).backward()
            optimizer.step()

    time_row(
        benchmark,
        train_iterations,
        op="end_to_end.train",
        provider=provider,
        shape=model.label,
        dtype=torch.float32,
        sparsity=round(1.0 - density, 4),
        device=profile.device,
        iterations_per_call=model.iterations,
        density=density,
        **compact_training_info(provider, network, batches[0][0]),
    )


def test_train_mlp(benchmark, monkeypatch, profile, model, density, provider):
    _time_training(benchmark, monkeypatch, profile, model, density, provider)


def test_train_conv_net(benchmark, monkeypatch, profile, model, density, provider):
    _time_training(benchmark, monkeypatch, profile, model, density, provider)
