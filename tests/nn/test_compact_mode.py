"""The compact mode of the masked layers: switching changes no value, the layer still looks
like nn.Linear / nn.Conv2d, and its state_dict is the dense layer's."""

import copy

import pytest
import torch
import torch.nn.functional as F

from sparse_tickets import MaskedConv2d, MaskedLinear
from sparse_tickets.ops.native import extension

_CPU_EXTENSION_LOADED = extension.unavailable_reason(extension.CPU) is None


def _linear(density=0.3):
    layer = MaskedLinear(11, 7)
    layer.set_mask(torch.rand(7, 11) < density)
    return layer


def _conv(**kwargs):
    layer = MaskedConv2d(3, 5, 3, **kwargs)
    layer.set_mask(torch.rand(layer.mask.shape) < 0.4)
    return layer


def test_switching_modes_changes_no_value():
    layer = _linear()
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    x = torch.randn(4, 11)
    y = layer(x)
    layer.set_mode("compact")
    assert layer.mode == "compact"
    assert torch.equal(layer.weight, weight) and torch.equal(layer.bias, bias)
    assert torch.allclose(layer(x), y, atol=1e-6)
    assert [name for name, _ in layer.named_parameters()] == ["values", "bias"]
    assert layer.values.shape == (int(layer.mask.sum()),)
    layer.set_mode("dense")
    assert layer.mode == "dense" and torch.equal(layer.weight, weight)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]


def test_round_trips_keep_the_dense_parameter_object():
    layer = _linear()
    parameter = layer.weight
    layer.set_mode("compact")
    assert parameter.numel() == 0  # compact mode does not keep the dense storage
    layer.set_mode("dense")
    assert layer.weight is parameter and parameter.shape == (7, 11)


def test_the_weight_reads_as_dense_and_carries_gradients_into_values():
    layer = _linear()
    layer.set_mode("compact")
    weight = layer.weight
    assert weight.shape == (7, 11) and torch.equal(weight == 0, ~layer.mask | (weight == 0))
    weight.square().sum().backward()
    assert torch.allclose(layer.values.grad, 2 * layer.values.detach())


def test_state_dict_is_the_dense_layers_in_either_mode():
    layer = _linear()
    dense_state = layer.state_dict()
    layer.set_mode("compact")
    compact_state = layer.state_dict()
    assert list(compact_state) == list(dense_state) == ["weight", "bias", "mask"]
    for key in dense_state:
        assert torch.equal(compact_state[key], dense_state[key])


def test_loading_the_same_mask_keeps_the_values_parameter():
    layer = _linear()
    layer.set_mode("compact")
    values = layer.values
    other = _linear()
    other.set_mask(layer.mask)
    layer.load_state_dict(other.state_dict())
    assert layer.values is values
    assert torch.equal(layer.weight, other.weight)


def test_loading_another_mask_rebuilds_the_index():
    layer = _linear()
    layer.set_mode("compact")
    other = _linear(density=0.6)
    layer.load_state_dict(other.state_dict())
    assert layer.mode == "compact"
    assert torch.equal(layer.mask, other.mask) and torch.equal(layer.weight, other.weight)
    assert layer.values.shape == (int(other.mask.sum()),)


def test_set_mask_in_compact_mode_prunes_and_stays_compact():
    layer = _linear(density=0.8)
    layer.set_mode("compact")
    weight = layer.weight.detach().clone()
    smaller = layer.mask & (torch.rand(7, 11) < 0.5)
    layer.set_mask(smaller)
    assert layer.mode == "compact"
    assert torch.equal(layer.weight, weight * smaller)
    assert layer.values.shape == (int(smaller.sum()),)


def test_a_compact_layer_trains_like_a_dense_one():
    torch.manual_seed(1)
    dense = _linear()
    compact = copy.deepcopy(dense)
    compact.set_mode("compact")
    x, target = torch.randn(16, 11), torch.randn(16, 7)
    for layer in (dense, compact):
        F.mse_loss(layer(x), target).backward()
    assert torch.allclose(compact.values.grad, dense.weight.grad[dense.mask], atol=1e-6)
    assert torch.equal(dense.weight.grad[~dense.mask], torch.zeros(int((~dense.mask).sum())))
    assert torch.allclose(compact.bias.grad, dense.bias.grad, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding=1),
        dict(padding="same", padding_mode="reflect"),
        dict(stride=2, dilation=2, padding=(2, 1)),
        dict(padding=1, padding_mode="circular", bias=False),
    ],
    ids=["padded", "same-reflect", "strided-dilated", "circular"],
)
def test_compact_conv_matches_dense(kwargs):
    layer = _conv(**kwargs)
    x = torch.randn(2, 3, 9, 8)
    y = layer(x)
    layer.set_mode("compact")
    assert torch.allclose(layer(x), y, atol=1e-5)


@pytest.mark.parametrize("variant", [None, "batch", "width", "im2col"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding=1),
        dict(padding="same", padding_mode="reflect"),
        dict(stride=2, padding=1, groups=3),
    ],
    ids=["padded", "same-reflect", "strided-depthwise"],
)
def test_every_conv_variant_trains_like_the_dense_layer(variant, kwargs):
    torch.manual_seed(2)
    dense = MaskedConv2d(3, 6, 3, **kwargs)
    dense.set_mask(torch.rand(dense.mask.shape) < 0.4)
    compact = copy.deepcopy(dense)
    compact.conv_variant = variant
    compact.set_mode("compact")
    x = torch.randn(5, 3, 9, 8)
    if variant == "im2col" and dense.groups > 1 and _CPU_EXTENSION_LOADED:
        with pytest.raises(ValueError, match="serves groups=1 only"):
            compact(x)
        return
    outputs = [layer(x) for layer in (dense, compact)]
    assert torch.allclose(outputs[1], outputs[0], atol=1e-5)
    for y in outputs:
        y.square().sum().backward()
    assert torch.allclose(compact.values.grad, dense.weight.grad[dense.mask], atol=1e-4)
    assert torch.allclose(compact.bias.grad, dense.bias.grad, atol=1e-4)
    if variant is None:
        assert list(compact.compact_index.conv_plan.choices.values()) in (["batch"], ["width"])


def test_module_conversions_carry_the_compact_form():
    layer = _linear()
    layer.set_mode("compact")
    double = copy.deepcopy(layer).double()
    assert double.values.dtype == torch.float64
    assert double.compact_index.row_ptr.dtype == torch.int32
    assert torch.equal(double.weight, layer.weight.double())
    exported = layer.to_dense()
    assert type(exported) is torch.nn.Linear and torch.equal(exported.weight, layer.weight)
    assert "mode=compact" in repr(layer)


def test_reset_parameters_in_compact_mode_respects_the_mask():
    layer = _linear()
    layer.set_mode("compact")
    before = layer.weight.detach().clone()
    layer.reset_parameters()
    assert layer.mode == "compact"
    assert not torch.equal(layer.weight, before)
    assert torch.equal(layer.weight[~layer.mask], torch.zeros(int((~layer.mask).sum())))


def test_dense_index_is_unavailable_in_dense_mode():
    with pytest.raises(RuntimeError, match="is in dense mode; it has no compact index"):
        _ = _linear().compact_index


class _LinearThenConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = MaskedConv2d(3, 4, 3, padding=1), MaskedLinear(4 * 5 * 5, 6)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def _loss_and_grads(model, run, x):
    model.zero_grad(set_to_none=True)
    loss = run(x).square().mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def _assert_same(got, expected):
    torch.testing.assert_close(got[0], expected[0])
    assert got[1].keys() == expected[1].keys()
    for name, grad in got[1].items():
        torch.testing.assert_close(grad, expected[1][name], msg=name)


def test_a_compiled_model_follows_every_mask_change_and_buffer_move_with_no_eager_call():
    from torch._dynamo.utils import counters

    model, x = _LinearThenConv(), torch.randn(2, 3, 5, 5)
    for layer in (model.conv, model.fc):
        layer.set_mode("compact")
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    for density in (0.5, 0.2):  # each mask change is followed, the graph rebuilt at once
        for layer in (model.conv, model.fc):
            layer.set_mask(layer.mask & (torch.rand(layer.mask.shape) < density))
        got = _loss_and_grads(model, compiled, x)
        _assert_same(got, _loss_and_grads(model, model, x))
    # The index buffers replaced: by .to() (cached again at once) and by hand (built inside
    # the graph, without storing anything there).
    model.to(torch.float64)
    model.fc.compact_col_idx = model.fc.compact_col_idx.clone()
    x = x.double()
    got = _loss_and_grads(model, compiled, x)
    _assert_same(got, _loss_and_grads(model, model, x))
    assert not counters["graph_break"], dict(counters["graph_break"])
