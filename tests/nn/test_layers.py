"""MaskedLinear / MaskedConv2d: drop-in behaviour, set_mask validation, the zero invariant."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune  # noqa: F401  (torch.nn.utils.prune as an attribute)
from torch import nn

from sparse_tickets import MaskedConv2d, MaskedLinear
from tests.conftest import DEVICES


def _half_mask(weight):
    return torch.rand(weight.shape, device=weight.device) < 0.5


@pytest.mark.parametrize("device", DEVICES)
def test_masked_linear_is_a_linear_with_a_full_bool_mask(device):
    layer = MaskedLinear(7, 3, bias=False, device=device, dtype=torch.float64)
    assert isinstance(layer, nn.Linear)
    assert layer.mask.dtype == torch.bool and layer.mask.all()
    assert layer.mask.shape == layer.weight.shape and layer.mask.device == layer.weight.device
    assert layer.weight.dtype == torch.float64 and layer.bias is None
    assert set(layer.state_dict()) == {"weight", "mask"}
    assert layer.density == 1.0


def test_full_mask_layers_equal_torch_layers():
    torch.manual_seed(1)
    linear = nn.Linear(11, 5)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    x_linear, x_conv = torch.randn(2, 11), torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(MaskedLinear.from_dense(linear)(x_linear), linear(x_linear))
    torch.testing.assert_close(MaskedConv2d.from_dense(conv)(x_conv), conv(x_conv))


def test_set_mask_zeroes_pruned_weights_and_sets_density():
    layer = MaskedLinear(10, 10)
    mask = _half_mask(layer.weight)
    layer.set_mask(mask)
    assert torch.equal(layer.mask, mask)
    assert torch.equal(layer.weight[~mask], torch.zeros(int((~mask).sum())))
    assert layer.density == pytest.approx(mask.float().mean().item())
    assert layer.num_unpruned == int(mask.sum())


def test_set_mask_accepts_0_1_values_and_updates_the_buffer_in_place():
    layer = MaskedLinear(2, 2)
    buffer = layer.mask
    layer.set_mask([[1, 0], [0, 1]])
    assert layer.mask is buffer
    assert layer.mask.tolist() == [[True, False], [False, True]]
    layer.set_mask(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    assert layer.mask.tolist() == [[False, True], [True, True]]


@pytest.mark.parametrize(
    "mask,message",
    [
        (
            torch.ones(3, 2, dtype=torch.bool),
            "mask has shape (3, 2); expected the weight's shape (2, 3)",
        ),
        (torch.tensor([[1, 2, 0], [0, 1, 1]]), "mask holds the value 2; expected only 0 and 1"),
        (torch.full((2, 3), 0.5), "mask holds the value 0.5; expected only 0 and 1"),
        (
            torch.ones(2, 3, dtype=torch.bool, device="meta"),
            "mask is on meta; expected the weight's device cpu",
        ),
        ("all", "mask must be a tensor of 0/1 or bool values; got str"),
    ],
)
def test_set_mask_rejects_bad_masks_in_one_line(mask, message):
    layer = MaskedLinear(3, 2)
    before = layer.weight.detach().clone()
    with pytest.raises(ValueError) as error:
        layer.set_mask(mask)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert torch.equal(layer.weight, before) and layer.mask.all()  # nothing lost


def test_state_dict_round_trip_keeps_mask_and_zeros():
    source = MaskedConv2d(3, 4, 3)
    source.set_mask(_half_mask(source.weight))
    target = MaskedConv2d(3, 4, 3)
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.mask, source.mask) and torch.equal(target.weight, source.weight)


def test_loading_weights_nonzero_where_pruned_restores_the_invariant():
    layer = MaskedLinear(6, 4)
    mask = _half_mask(layer.weight)
    state = {"weight": torch.randn(4, 6), "bias": torch.randn(4), "mask": mask}
    layer.load_state_dict(state)
    assert torch.equal(layer.weight, state["weight"] * mask)


def test_loading_a_non_binary_mask_is_refused():
    layer = MaskedLinear(2, 2)
    state = dict(layer.state_dict(), mask=torch.full((2, 2), 0.5))
    with pytest.raises(ValueError, match=r"state_dict\['mask'\] holds the value 0.5"):
        layer.load_state_dict(state)


def test_reset_parameters_keeps_pruned_weights_zero():
    layer = MaskedLinear(8, 8)
    mask = _half_mask(layer.weight)
    layer.set_mask(mask)
    layer.reset_parameters()
    assert (layer.weight[~mask] == 0).all() and (layer.weight[mask] != 0).all()


def test_layer_survives_dtype_moves_copies_and_pickling():
    layer = MaskedConv2d(2, 3, 3)
    layer.set_mask(_half_mask(layer.weight))
    moved = copy.deepcopy(layer).double()
    assert moved.mask.dtype == torch.bool and moved.weight.dtype == torch.float64
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded.mask, layer.mask) and torch.equal(loaded.weight, layer.weight)


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_conv_padding_modes_match_torch(padding_mode):
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode=padding_mode)
    masked = MaskedConv2d.from_dense(conv)
    mask = _half_mask(conv.weight)
    masked.set_mask(mask)  # shares conv's weight, so conv now holds the zeroed weight too
    x = torch.randn(2, 2, 7, 6)
    torch.testing.assert_close(masked(x), conv(x))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conv_same_padding_with_even_kernel_matches_torch():
    conv = nn.Conv2d(2, 3, (4, 2), padding="same", dilation=(1, 3))
    x = torch.randn(1, 2, 9, 8)
    expected = conv(x)  # torch warns once per process that it pads a copy of x
    torch.testing.assert_close(MaskedConv2d.from_dense(conv)(x), expected)


def test_from_dense_shares_parameters_and_keeps_mode():
    conv = nn.Conv2d(3, 5, 2, bias=False, dtype=torch.float64).eval()
    masked = MaskedConv2d.from_dense(conv)
    assert masked.weight is conv.weight and masked.bias is None
    assert not masked.training and masked.mask.dtype == torch.bool
    with pytest.raises(TypeError, match="expects an nn.Linear; got Conv2d"):
        MaskedLinear.from_dense(conv)


def test_from_dense_of_a_masked_layer_keeps_its_mask():
    layer = MaskedLinear(4, 4)
    layer.set_mask(_half_mask(layer.weight))
    assert torch.equal(MaskedLinear.from_dense(layer).mask, layer.mask)


def test_gradients_through_the_layer_are_masked():
    layer = MaskedLinear(9, 4)
    mask = _half_mask(layer.weight)
    layer.set_mask(mask)
    F.cross_entropy(layer(torch.randn(5, 9)), torch.tensor([0, 1, 2, 3, 0])).backward()
    assert (layer.weight.grad[~mask] == 0).all()


@pytest.mark.parametrize(
    "make_layer,x_shape",
    [(lambda: MaskedLinear(6, 4), (3, 6)), (lambda: MaskedConv2d(2, 3, 3), (1, 2, 6, 6))],
)
def test_autocast_runs_in_the_low_dtype_and_masks_full_precision_grads(make_layer, x_shape):
    layer = make_layer()
    mask = _half_mask(layer.weight)
    layer.set_mask(mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(x_shape))
    assert y.dtype == torch.bfloat16
    y.float().pow(2).sum().backward()
    assert layer.weight.grad.dtype == torch.float32
    assert (layer.weight.grad[~mask] == 0).all() and (layer.weight.grad[mask] != 0).any()


def test_meta_layers_print_and_load_with_assign():
    source = MaskedLinear(3, 4)
    source.set_mask(_half_mask(source.weight))
    target = MaskedLinear(3, 4, device="meta")
    assert "density" not in repr(target)
    target.load_state_dict(source.state_dict(), assign=True)
    assert target.mask.device.type == "cpu" and torch.equal(target.mask, source.mask)
    x = torch.randn(2, 3)
    torch.testing.assert_close(target(x), source(x))


def test_zero_input_features_work_as_in_torch():
    with pytest.warns(UserWarning, match="zero-element"):
        layer = MaskedLinear(0, 3)
    assert torch.equal(layer(torch.randn(2, 0)), layer.bias.expand(2, 3))


def test_to_dense_gives_the_plain_layer_with_zeroed_weights():
    layer = MaskedConv2d(2, 3, 3, padding=1, padding_mode="reflect")
    layer.set_mask(_half_mask(layer.weight))
    dense = layer.to_dense()
    assert type(dense) is nn.Conv2d and dense.weight is layer.weight
    assert dense.padding_mode == "reflect"
    x = torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(dense(x), layer(x))


def test_from_dense_refuses_a_layer_pruned_by_torch_prune():
    linear = nn.Linear(4, 4)
    torch.nn.utils.prune.random_unstructured(linear, "weight", amount=0.5)
    with pytest.raises(ValueError, match="Linear.weight is a computed tensor, not a Parameter"):
        MaskedLinear.from_dense(linear)


def test_mixed_input_and_weight_dtypes_are_refused():
    layer = MaskedLinear(3, 2)
    with pytest.raises(
        ValueError,
        match="input, weight and bias must share one dtype; got "
        "input torch.float64, weight torch.float32",
    ):
        layer(torch.randn(1, 3, dtype=torch.float64))


@pytest.mark.parametrize("autocast", [False, True])
def test_meta_layers_propagate_shapes_forward_and_backward(autocast):
    # As torch's own layers on meta: no values, the shapes and dtypes only, autocast ignored.
    linear = MaskedLinear(6, 4, device="meta")
    conv = MaskedConv2d(3, 5, 3, padding=1, device="meta")
    x = torch.randn(2, 7, 6, device="meta", requires_grad=True)
    images = torch.randn(2, 3, 8, 8, device="meta")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y, z = linear(x), conv(images)
    assert (y.shape, y.dtype, y.is_meta) == ((2, 7, 4), torch.float32, True)
    assert (z.shape, z.dtype, z.is_meta) == ((2, 5, 8, 8), torch.float32, True)
    (y.sum() + z.sum()).backward()
    assert linear.weight.grad.shape == (4, 6) and x.grad.shape == x.shape


def test_to_empty_gives_a_meta_layer_a_full_mask_not_uninitialised_memory():
    layer = MaskedLinear(5, 3, device="meta")
    with pytest.raises(ValueError, match="on the meta device, which holds no values") as error:
        _ = layer.density
    assert "\n" not in str(error.value)
    layer.to_empty(device="cpu")
    assert layer.mask.dtype == torch.bool and bool(layer.mask.all())
    assert type(layer.mask) is torch.Tensor and layer.density == 1.0


def test_a_mask_left_on_meta_beside_a_loaded_weight_becomes_full():
    # A checkpoint holding the weights and not the masks, loaded tensor by tensor (as
    # accelerate does) or with assign=True: the masks are those of a freshly masked layer.
    layer = MaskedLinear(5, 3, device="meta")
    layer.weight = nn.Parameter(torch.randn(3, 5))
    layer.bias = nn.Parameter(torch.randn(3))
    x = torch.randn(2, 5)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert layer.mask.device.type == "cpu" and bool(layer.mask.all())
    loaded = MaskedLinear(5, 3, device="meta")
    loaded.load_state_dict(
        {"weight": torch.randn(3, 5), "bias": torch.randn(3)}, strict=False, assign=True
    )
    assert loaded.mask.device.type == "cpu" and bool(loaded.mask.all())
