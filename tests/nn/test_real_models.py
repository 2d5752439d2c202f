"""Drop-in on real architectures: transformers' BERT, GPT-2 and ViT (tiny configs, random init)
and a Conv2d+BatchNorm CNN. Each is converted, pruned to 10% globally by magnitude, compared with
a plain copy holding ``weight * mask``, run compact, trained with MaskedAdamW, trained with a
plain AdamW across a mode switch, and built on the meta device then materialised and loaded
(compiled with fullgraph=True in both modes: test_real_models_compile)."""

import copy

import pytest
import torch
from torch import nn

import sparse_tickets as st
from sparse_tickets.compact.choice import default_mode_set_to
from sparse_tickets.nn.state import mask_keys
from sparse_tickets.optim import MaskedAdamW
from sparse_tickets.pruning import Masks, prune_to_density, weights_of
from tests.nn.real_models import BUILDERS, gpt2, llama, needs_transformers

DENSITY = 0.1


def pruned(build):
    """(the case, its masked model pruned to DENSITY globally, the masks, a plain copy of the
    model as it was before conversion)."""
    case = build()
    plain = copy.deepcopy(case.model)
    model = st.masked(case.model)
    masks = prune_to_density(weights_of(model), Masks.from_model(model), DENSITY, scope="global")
    masks.apply_to(model)
    return case, model, masks, plain


def coverage(model: nn.Module, layer_types: tuple) -> float:
    """Fraction of the entries of the 2-D+ weights of ``layer_types`` modules that carry a mask."""
    masked = {id(source.trainable_weight) for source in st.masked_weights(model).values()}
    total = covered = 0
    counted = set()
    for module in model.modules():
        if not isinstance(module, (*layer_types, st.MaskedLayer)):
            continue
        for param in module._parameters.values():
            if param is None or param.dim() < 2 or id(param) in counted:
                continue
            counted.add(id(param))
            total += param.numel()
            covered += param.numel() if id(param) in masked else 0
    return covered / total


def assert_pruned_weights_are_zero(model, masks, case):
    weights = weights_of(model)
    for name, mask in masks.items():
        assert not bool(weights[name][~mask].any()), name
    if case.tied:
        head, embedding = (model.get_parameter(name) for name in case.tied)
        assert embedding is head
        assert not bool(embedding[~masks[case.tied[0]]].any())


@pytest.mark.parametrize("build", BUILDERS)
def test_converts_prunes_matches_a_plain_copy_and_runs_compact(build):
    case, model, masks, plain = pruned(build)
    report = st.masking_report(model)
    assert coverage(model, case.layer_types) >= 0.95, str(report)
    assert masks.density == pytest.approx(DENSITY, abs=1e-3)
    if case.tied:
        head, embedding = case.tied
        assert head in masks and embedding not in masks  # one mask for the tied Parameter
        row = next(row for row in report.masked if row.key == head)
        assert embedding in row.shared_with
    # A plain copy of the original model with weight * mask computes the same outputs.
    with torch.no_grad():
        for name, mask in masks.items():
            plain.get_parameter(name).mul_(mask)
    model.eval(), plain.eval()
    expected = case.output(plain, case.inputs)
    torch.testing.assert_close(case.output(model, case.inputs), expected, rtol=1e-5, atol=1e-6)
    # The plain state_dict loads strictly into the original class.
    reloaded = copy.deepcopy(plain)
    reloaded.load_state_dict(st.plain_state_dict(model), strict=True)
    torch.testing.assert_close(case.output(reloaded, case.inputs), expected, rtol=0, atol=0)
    # Compact where a layer can run it; a tied head stays dense and says why.
    with default_mode_set_to("compact"):
        masks.apply_to(model)
    modes = {name: layer.mode for name, layer in st.masked_layers(model)}
    for _name, layer in st.masked_layers(model):
        if layer.weight_shared_with:
            assert layer.mode == "dense"
            with pytest.raises(ValueError, match="tied weights"):
                layer.set_mode("compact")
    if not case.tied or len(modes) > 1:
        assert "compact" in modes.values(), modes
    torch.testing.assert_close(case.output(model, case.inputs), expected, rtol=1e-4, atol=1e-5)
    state = model.state_dict()
    assert all(state[name].shape == mask.shape for name, mask in masks.items())
    if case.tied:
        assert state[case.tied[1]].shape == masks[case.tied[0]].shape  # never emptied


@pytest.mark.parametrize("build", BUILDERS)
def test_masked_adamw_trains_with_pruned_weights_at_zero(build):
    case, model, masks, _ = pruned(build)
    with default_mode_set_to("compact"):
        masks.apply_to(model)
    model.train()
    optimizer = MaskedAdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = case.loss(model, case.inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    assert_pruned_weights_are_zero(model, masks, case)


@pytest.mark.parametrize("build", BUILDERS)
def test_a_plain_adamw_keeps_training_across_a_mode_switch(build):
    case, model, masks, _ = pruned(build)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    case.loss(model, case.inputs).backward()
    optimizer.step()
    optimizer.zero_grad()
    with default_mode_set_to("compact"):
        masks.apply_to(model)
    trained = {name: source.trainable_weight for name, source in st.masked_weights(model).items()}
    before = {name: param.detach().clone() for name, param in trained.items()}
    case.loss(model, case.inputs).backward()
    optimizer.step()
    optimizer.zero_grad()
    stalled = [name for name, param in trained.items() if torch.equal(param, before[name])]
    assert not stalled, f"not trained after the switch: {stalled}"
    assert_pruned_weights_are_zero(model, masks, case)


def restore_non_persistent_buffers(model, like):
    """What transformers' loading does after to_empty for the buffers no checkpoint holds
    (e.g. the rotary embedding's frequencies): computed again, here copied from ``like``."""
    persistent = like.state_dict()
    with torch.no_grad():
        for name, buffer in like.named_buffers():
            if name not in persistent:
                model.get_buffer(name).copy_(buffer)


@needs_transformers
@pytest.mark.parametrize("build", [gpt2, llama], ids=["gpt2", "llama"])
def test_built_on_meta_materialised_with_to_empty_then_loaded(build):
    """transformers' low-memory loading: the model built on meta (no memory), masked there,
    given storage by to_empty, then loaded. Its masks are full until a checkpoint says
    otherwise, and a masked checkpoint brings its masks."""
    case, source, masks, plain = pruned(build)
    source.eval()
    with torch.device("meta"):
        model = st.masked(case.make())
    keys = mask_keys(model)
    assert keys and all(model.get_buffer(key).is_meta for key in keys)
    model.to_empty(device="cpu")
    restore_non_persistent_buffers(model, plain)
    assert all(bool(model.get_buffer(key).all()) for key in keys)
    # The original (plain) checkpoint: nothing pruned, the plain model's outputs.
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == sorted(keys) and not unexpected
    model.eval(), plain.eval()
    torch.testing.assert_close(case.output(model, case.inputs), case.output(plain, case.inputs))
    # A pruned checkpoint: its masks, its outputs.
    with torch.device("meta"):
        model = st.masked(case.make())
    model.to_empty(device="cpu")
    restore_non_persistent_buffers(model, plain)
    model.load_state_dict(source.state_dict())
    model.eval()
    assert Masks.from_model(model) == masks
    torch.testing.assert_close(case.output(model, case.inputs), case.output(source, case.inputs))
