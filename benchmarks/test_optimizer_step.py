"""One optimizer step over all parameters of VGG-19 and ResNet-20 with random masks pruning
``profile.optimizer_sparsity`` of every masked layer's weights.

Ours: MaskedSGD (momentum 0.9, weight decay 1e-4) / MaskedAdam through each backend, which
keep pruned weights and their state at zero in the step itself, and the same optimizers on the
network with every masked layer in the compact mode (``compact``: they step the kept values
only, on the auto-selected backend). Baselines: torch.optim SGD /
Adam with ``foreach=True`` on the unpruned network (dense), then followed by ``p.mul_(mask)``
for every masked weight (prune_style), and the same with ``fused=True`` (prune_style_fused,
where torch has a fused step for the device). Gradients are random, masked, filled once and
reused by every step.
"""

import torch

import sparse_tickets
from benchmarks.measure import time_row
from benchmarks.networks import masked_parameters, prune_randomly, set_compact
from benchmarks.profiles import profile_of
from benchmarks.providers import (
    COMPACT,
    DENSE,
    PRUNE_STYLE,
    PRUNE_STYLE_FUSED,
    backend_names,
    compact_providers,
    prepare,
    selected_backend,
)
from sparse_tickets.optim import MaskedAdam, MaskedSGD

# name -> (our optimizer, torch's, their hyperparameters); SGD as the paper trains VGG/ResNet.
OPTIMIZERS = {
    "sgd": (MaskedSGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
    "adam": (MaskedAdam, torch.optim.Adam, dict(lr=1e-3)),
}


def fused_supported(torch_optimizer, device: str) -> bool:
    """Whether torch has a fused step of ``torch_optimizer`` for ``device`` (tried on a tiny
    parameter: the support matrix changes between torch versions)."""
    param = torch.nn.Parameter(torch.zeros(2, device=device))
    param.grad = torch.zeros_like(param)
    try:
        torch_optimizer([param], lr=0.1, fused=True).step()
    except (RuntimeError, ValueError):
        return False
    return True


def pytest_generate_tests(metafunc):
    profile = profile_of(metafunc.config)
    cases, ids = [], []
    for model in profile.optimizer_models:
        for name, (_, torch_optimizer, _) in OPTIMIZERS.items():
            providers = backend_names(f"masked_{name}_step", profile.device, torch.float32)
            providers += compact_providers(profile.device, torch.float32)
            providers += [DENSE, PRUNE_STYLE]
            if fused_supported(torch_optimizer, profile.device):
                providers.append(PRUNE_STYLE_FUSED)
            for provider in providers:
                cases.append((model, name, provider))
                ids.append(f"{model}-{name}-{provider}")
    metafunc.parametrize("model,optimizer,provider", cases, ids=ids)


def _step_function(provider, optimizer, network, weights_and_masks):
    masked_class, torch_class, hyperparameters = OPTIMIZERS[optimizer]
    params = list(network.parameters())
    if provider == DENSE:
        return torch_class(params, foreach=True, **hyperparameters).step
    if provider in (PRUNE_STYLE, PRUNE_STYLE_FUSED):
        fused = provider == PRUNE_STYLE_FUSED
        step = torch_class(
            params, **hyperparameters, **(dict(fused=True) if fused else dict(foreach=True))
        ).step

        @torch.no_grad()
        def step_then_mask():
            step()
            for weight, mask in weights_and_masks:
                weight.mul_(mask)

        return step_then_mask
    return masked_class(params, masks=network, **hyperparameters).step


def test_step(benchmark, monkeypatch, profile, model, optimizer, provider):
    density = 1.0 - profile.optimizer_sparsity
    network = sparse_tickets.models.create(model).to(profile.device)
    prune_randomly(network, density)
    millions = sum(p.numel() for p in network.parameters()) / 1e6
    if provider == COMPACT:
        set_compact(network)  # its layers' parameters are now their kept values: no masks
    weights_and_masks = [] if provider == COMPACT else masked_parameters(network)
    mask_of = {id(weight): mask for weight, mask in weights_and_masks}
    for param in network.parameters():
        param.grad = torch.randn_like(param)
        if id(param) in mask_of:
            param.grad.mul_(mask_of[id(param)])
    prepare(
        monkeypatch,
        provider,
        f"masked_{optimizer}_step",
        list(network.parameters()) + list(mask_of.values()),
    )
    step = _step_function(provider, optimizer, network, weights_and_masks)
    extra = (
        {"backend": selected_backend(f"masked_{optimizer}_step", list(network.parameters()))}
        if provider == COMPACT
        else {}
    )
    time_row(
        benchmark,
        step,
        op=f"optimizer.{optimizer}_step",
        provider=provider,
        shape=f"{model} ({millions:.2f}M params)",
        dtype=torch.float32,
        sparsity=profile.optimizer_sparsity,
        device=profile.device,
        **extra,
    )
