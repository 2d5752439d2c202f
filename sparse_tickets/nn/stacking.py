"""K replicates of one network as one network, so that one forward, one backward and one
optimizer step train all K.

Replicate r's input is slice r of the stacked input's dimension 1 (its features, or its
channels), and its output is slice r of the stacked output's dimension 1. A masked linear or
conv of the replicates becomes one K times as wide whose mask keeps only the diagonal blocks (r's
outputs read only r's inputs); a BatchNorm concatenates their channels (its statistics are per
channel, so per replicate); a module with no parameters or buffers of its own (an activation,
pooling, flatten, a container) is kept as it is. The stacked masked layers run in compact mode:
the off-diagonal blocks then cost nothing, and a non-finite number in one replicate cannot reach
another (a dense product would multiply it by the zeros between them).

Whether a network's forward keeps the replicates apart (no reshape across its features, no
channel padding) cannot be read from its modules, so :func:`stack` checks it: the stacked
network's outputs on a random input must be the replicates' own. A network that fails, or has a
module of another kind, is :class:`NotStackable`, with the reason.

States move between the two forms by name: a state_dict of the stacked network is the
replicates' state_dicts stacked (:func:`stack_states`), and back (:func:`unstack_state`); the
optimizer state moves the same way in the dense layout (:func:`dense_optimizer_state`,
:func:`load_dense_optimizer_state`), whatever mode each layer runs in.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .holders import masked_layers
from .layers import MaskedConv2d, MaskedLayer, MaskedLinear

# Relative tolerance of the forward check: the stacked kernels sum in another order.
_CHECK_TOLERANCE = 1e-4
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class NotStackable(ValueError):
    """These networks cannot be trained as one stacked network; the message says why."""


def stack(models: Sequence[nn.Module], input_shape: Sequence[int]) -> nn.Module:
    """One network computing ``models`` (replicates of one architecture, inputs of
    ``input_shape`` without the batch) side by side; its masked layers in compact mode (one
    model gives a compact copy of it).
    Raises :class:`NotStackable` naming what does not stack."""
    if not models:
        raise NotStackable("no network given; expected the replicates to stack")
    template = models[0]
    _check_same_architecture(models)
    stacked = copy.deepcopy(template)
    for name, module in list(stacked.named_modules()):
        wide = _widened(name, module, len(models))
        if wide is not module:
            _replace(stacked, name, wide)
    stacked.load_state_dict(stack_states(template, [model.state_dict() for model in models]))
    for _, layer in masked_layers(stacked):
        layer.set_mode("compact")
    _check_forward(stacked, models, input_shape)
    return stacked


def block_names(model: nn.Module) -> set[str]:
    """The state names of ``model`` stacked block-diagonally: masked layers' weights, masks."""
    names = set()
    for name, _ in masked_layers(model):
        prefix = f"{name}." if name else ""
        names |= {f"{prefix}weight", f"{prefix}mask"}
    return names


def stack_states(template: nn.Module, states: Sequence[dict]) -> dict:
    """The stacked network's state_dict from the replicates' (named as ``template``'s)."""
    blocks = block_names(template)
    return {
        name: _stack_tensor(name, [state[name] for state in states], blocks) for name in states[0]
    }


def unstack_state(template: nn.Module, stacked_state: dict, count: int, replicate: int) -> dict:
    """Replicate ``replicate``'s state_dict (named as ``template``'s) out of a stacked one."""
    blocks = block_names(template)
    return {
        name: _unstack_tensor(name, tensor, count, replicate, blocks)
        for name, tensor in stacked_state.items()
    }


def dense_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """``optimizer``'s state of ``model``'s parameters, by state_dict name, every tensor in the
    dense layout (a compact layer's state scattered to its weight's shape, zeros where pruned)."""
    result = {}
    for name, param, layer in _named_trainables(model):
        state = optimizer.state.get(param)
        if not state:
            continue
        result[name] = {
            key: (
                layer.compact_index.to_dense(value)
                if layer is not None and _is_compact_tensor(value, layer)
                else _detached(value)
            )
            for key, value in state.items()
        }
    return result


def load_dense_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, dense_state: dict
) -> None:
    """Set ``optimizer``'s state of ``model``'s parameters from :func:`dense_optimizer_state`'s
    form, each tensor in the layout of the layer's current mode."""
    for name, param, layer in _named_trainables(model):
        if name not in dense_state:
            optimizer.state.pop(param, None)
            continue
        optimizer.state[param] = {
            key: (
                layer.compact_index.gather(value)
                if layer is not None
                and layer.mode == "compact"
                and isinstance(value, torch.Tensor)
                and value.dim() > 0
                else _detached(value)
            )
            for key, value in dense_state[name].items()
        }


def stack_optimizer_states(template: nn.Module, states: Sequence[dict]) -> dict:
    """The stacked network's dense optimizer state from the replicates' (same keys)."""
    blocks = block_names(template)
    return {
        name: {
            key: _stack_tensor(name, [state[name][key] for state in states], blocks)
            for key in states[0][name]
        }
        for name in states[0]
    }


def unstack_optimizer_state(
    template: nn.Module, stacked_state: dict, count: int, replicate: int
) -> dict:
    """Replicate ``replicate``'s dense optimizer state out of the stacked network's."""
    blocks = block_names(template)
    return {
        name: {
            key: _unstack_tensor(name, value, count, replicate, blocks)
            for key, value in per_param.items()
        }
        for name, per_param in stacked_state.items()
    }


# The pieces.


def _check_same_architecture(models: Sequence[nn.Module]) -> None:
    first = {name: tuple(t.shape) for name, t in models[0].state_dict().items()}
    for index, model in enumerate(models[1:], start=1):
        shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        if shapes != first or type(model) is not type(models[0]):
            raise NotStackable(
                f"network {index} is not the same architecture as network 0; expected replicates"
            )


def _widened(name: str, module: nn.Module, count: int) -> nn.Module:
    """``module`` as it is in the stacked network: masked layers and batch norms widened
    ``count`` times (their values loaded later), modules without state kept."""
    where = name or "the network itself"
    if isinstance(module, MaskedLayer) and module.weight_shared_with:
        raise NotStackable(
            f"{where} shares its weight with {', '.join(module.weight_shared_with)}; expected "
            f"untied weights to stack"
        )
    if isinstance(module, MaskedLinear):
        return MaskedLinear(
            count * module.in_features,
            count * module.out_features,
            bias=module.bias is not None,
            dtype=module.weight.dtype,
            device=module.weight.device,
        )
    if isinstance(module, MaskedConv2d):
        if module.groups != 1 or module.padding_mode != "zeros":
            raise NotStackable(
                f"{where} is a conv with groups={module.groups}, padding_mode="
                f"{module.padding_mode!r}; expected groups=1 and zero padding to stack"
            )
        return MaskedConv2d(
            count * module.in_channels,
            count * module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            bias=module.bias is not None,
            dtype=module.weight.dtype,
            device=module.weight.device,
        )
    if isinstance(module, _BATCH_NORMS):
        # Built where and as its own tensors are (one with none keeps torch's defaults).
        floating = [t for t in module.state_dict().values() if t.is_floating_point()]
        statistic = floating[0] if floating else torch.empty(0)
        return type(module)(
            count * module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            device=statistic.device,
            dtype=statistic.dtype,
        )
    if isinstance(module, nn.Dropout) and module.p > 0:
        raise NotStackable(
            f"{where} is dropout (p={module.p}): stacked replicates would draw other dropout "
            f"masks than separate runs; expected no dropout to stack"
        )
    own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
    if own:
        raise NotStackable(
            f"{where} is a {type(module).__name__} with state of its own "
            f"({own[0][0]}); expected masked linear/conv layers, batch norms and modules "
            f"without state"
        )
    return module


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _stack_tensor(name: str, tensors: list, blocks: set):
    first = tensors[0]
    if first is None or not isinstance(first, torch.Tensor):
        if any(t != first for t in tensors):
            raise NotStackable(f"{name} differs between the replicates: {tensors}")
        return first
    if first.dim() == 0:
        # Step counters and batch counts: the replicates have taken the same steps.
        if any(not torch.equal(t, first) for t in tensors):
            raise NotStackable(
                f"{name} differs between the replicates; expected them at the same step"
            )
        return first.clone()
    if name in blocks:
        count = len(tensors)
        out, inputs, *rest = first.shape
        stacked = first.new_zeros((count * out, count * inputs, *rest))
        for r, tensor in enumerate(tensors):
            stacked[r * out : (r + 1) * out, r * inputs : (r + 1) * inputs] = tensor
        return stacked
    return torch.cat(tensors, dim=0)


def _unstack_tensor(name: str, tensor, count: int, replicate: int, blocks: set):
    if not isinstance(tensor, torch.Tensor) or tensor.dim() == 0:
        return tensor.clone() if isinstance(tensor, torch.Tensor) else tensor
    if name in blocks:
        out, inputs = tensor.shape[0] // count, tensor.shape[1] // count
        rows = slice(replicate * out, (replicate + 1) * out)
        columns = slice(replicate * inputs, (replicate + 1) * inputs)
        return tensor[rows, columns].clone()
    size = tensor.shape[0] // count
    return tensor[replicate * size : (replicate + 1) * size].clone()


def _named_trainables(model: nn.Module):
    """(state_dict name, Parameter, masked layer or None) of each parameter of ``model``; a
    masked layer's trainable weight is named ``<layer>.weight`` in either mode."""
    trainable_of = {}
    for name, layer in masked_layers(model):
        trainable_of[id(layer.trainable_weight)] = (f"{name}.weight" if name else "weight", layer)
    for name, param in model.named_parameters():
        state_name, layer = trainable_of.get(id(param), (name, None))
        yield state_name, param, layer


def _is_compact_tensor(value, layer: MaskedLayer) -> bool:
    return (
        isinstance(value, torch.Tensor)
        and value.dim() > 0
        and layer.mode == "compact"
        and tuple(value.shape) != tuple(layer.mask.shape)
    )


def _detached(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


@torch.no_grad()
def _check_forward(stacked: nn.Module, models: Sequence[nn.Module], input_shape) -> None:
    """The stacked network's outputs must be the replicates' own (in evaluation mode, on
    copies, so no running statistic moves)."""
    generator = torch.Generator().manual_seed(0)
    parameter = next(models[0].parameters())
    inputs = [
        torch.randn(2, *input_shape, generator=generator).to(parameter.device, parameter.dtype)
        for _ in models
    ]
    expected = []
    for model, x in zip(models, inputs):
        copy_ = copy.deepcopy(model).eval()
        expected.append(copy_(x))
    probe = copy.deepcopy(stacked).eval()
    try:
        got = probe(torch.cat(inputs, dim=1))
    except RuntimeError as error:
        raise NotStackable(
            f"its forward fails on stacked inputs ({str(error).splitlines()[0]}); expected "
            f"a forward that keeps the replicates' features apart"
        ) from None
    want = torch.cat(expected, dim=1)
    scale = want.abs().max().clamp_min(1.0)
    if got.shape != want.shape or (got - want).abs().max() > _CHECK_TOLERANCE * scale:
        raise NotStackable(
            "its forward mixes the replicates (a reshape across features, channel padding, "
            "...); expected one that keeps each replicate's features apart"
        )
