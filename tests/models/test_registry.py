import pytest
import torch
from torch import nn

from sparse_tickets import MaskedLayer, masked_layers, models

PAPER_MODELS = ["lenet_300_100", "conv2", "conv4", "conv6", "vgg19", "resnet20"]
NUM_CLASSES = 7  # not the default, so a test sees that it is honoured


@pytest.fixture(scope="module")
def built():
    """One model per name (vgg19 has 20M weights: build each once for the module)."""
    torch.manual_seed(0)
    return {name: models.create(name, num_classes=NUM_CLASSES) for name in PAPER_MODELS}


def test_names_are_the_papers_models_in_figure_order():
    assert models.names() == PAPER_MODELS


def test_specs_give_the_default_input_shapes():
    shapes = {name: models.spec(name).default_input_shape for name in models.names()}
    assert shapes == {
        "lenet_300_100": (1, 28, 28),
        **{name: (3, 32, 32) for name in PAPER_MODELS[1:]},
    }


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_forward_on_the_default_shape_gives_one_row_per_example(built, name):
    model = built[name]
    assert model.input_shape == models.spec(name).default_input_shape
    logits = model(torch.randn(2, *model.input_shape))
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_every_linear_and_conv_is_masked_from_construction(built, name):
    layers = [
        module for module in built[name].modules() if isinstance(module, (nn.Linear, nn.Conv2d))
    ]
    assert layers and all(isinstance(layer, MaskedLayer) for layer in layers)
    assert all(bool(layer.mask.all()) for layer in layers)


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_output_layer_names_the_layer_that_produces_the_logits(built, name):
    model = built[name]
    layer_name = models.output_layer(model)
    assert layer_name == model.output_layer_name
    layer = model.get_submodule(layer_name)
    assert layer.out_features == NUM_CLASSES
    assert [n for n, _ in masked_layers(model)][-1] == layer_name
    seen = []
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(out))
    logits = model.eval()(torch.randn(2, *model.input_shape))
    handle.remove()
    model.train()
    assert len(seen) == 1 and torch.equal(seen[0], logits)


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_same_seed_gives_the_same_model(name):
    torch.manual_seed(3)
    first = models.create(name).state_dict()
    torch.manual_seed(3)
    second = models.create(name).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_create_passes_the_input_shape_and_options():
    model = models.create("conv6", input_shape=[1, 28, 28], dropout=0.25)
    assert model.input_shape == (1, 28, 28)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.25]


def test_spec_lists_each_models_options():
    assert models.spec("conv4").options == ("dropout",)
    assert models.spec("vgg19").options == ()


def test_unknown_name_is_a_one_line_error_listing_the_known_names():
    with pytest.raises(ValueError) as error:
        models.create("resnet18")
    message = str(error.value)
    assert "\n" not in message and "'resnet18'" in message
    assert all(name in message for name in PAPER_MODELS)


def test_a_name_that_is_not_a_string_is_a_type_error():
    with pytest.raises(TypeError, match="model name must be a str; got int"):
        models.spec(3)


def test_unknown_option_names_the_model_and_its_options():
    with pytest.raises(
        TypeError,
        match=r"^model 'lenet_300_100' has no option 'dropout'; its "
        r"options: none$",
    ):
        models.create("lenet_300_100", dropout=0.5)
    with pytest.raises(TypeError, match=r"no option 'droput'; its options: dropout$"):
        models.create("conv2", droput=0.5)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("lenet_300_100", (784,)),
        ("lenet_300_100", (1, 28, 0)),
        ("conv2", (3, 32.0, 32)),
        ("conv4", (3, 32, True)),
        ("resnet20", "3x32x32"),
        ("conv6", (3, 4, 4)),
        ("vgg19", (3, 16, 16)),
    ],
)
def test_a_shape_the_model_cannot_take_fails_at_construction(name, shape):
    with pytest.raises(ValueError) as error:
        models.create(name, input_shape=shape)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{name} cannot take input_shape ")


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, None])
def test_bad_num_classes_fails_at_construction(num_classes):
    with pytest.raises(ValueError, match=r"^resnet20 cannot take num_classes=.*positive int$"):
        models.create("resnet20", num_classes=num_classes)


def test_output_layer_of_a_model_without_one_is_a_clear_error():
    with pytest.raises(ValueError, match="Sequential has no output_layer_name"):
        models.output_layer(nn.Sequential(nn.Linear(2, 2)))
    model = models.create("lenet_300_100")
    model.output_layer_name = "classifier"
    with pytest.raises(ValueError, match="'classifier', which names no module"):
        models.output_layer(model)
