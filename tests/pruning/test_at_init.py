import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sparse_tickets import masked
from sparse_tickets.pruning import Masks, prune_to_density, weights_of
from sparse_tickets.pruning.at_init import (
    AT_INIT_METHODS,
    grasp_scores,
    prune_at_init,
    snip_scores,
    synflow_scores,
)
from tests.conftest import DEVICES
from tests.pruning.helpers import half_up, kept, one_line, small_model

INPUT_SHAPE = (1, 6, 6)  # small_model's input: 3 x 4 x 4 features after its 3x3 conv
CLASSES = 5


def batches(count=2, size=8, shape=INPUT_SHAPE, classes=CLASSES, dtype=torch.float32):
    return [
        (torch.randn(size, *shape, dtype=dtype), torch.randint(classes, (size,)))
        for _ in range(count)
    ]


def random_masks(model, density=0.6):
    return Masks({name: torch.rand(w.shape) < density for name, w in weights_of(model).items()})


def scores_of(method, model, masks, data):
    if method == "snip":
        return snip_scores(model, masks, data)
    if method == "grasp":
        return grasp_scores(model, masks, data)
    return synflow_scores(model, masks, INPUT_SHAPE)


def plain_small_model():
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU()),
            flatten=nn.Flatten(),
            fc1=nn.Linear(3 * 4 * 4, 7),
            fc2=nn.Linear(7, 5),
        )
    )


def plain_weights(plain):
    """The plain twin's layer weights under the mask keys."""
    return {
        f"{name}.weight": module.weight
        for name, module in plain.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d))
    }


def zeroed(plain, masks):
    with torch.no_grad():
        for name, weight in plain_weights(plain).items():
            weight.mul_(masks[name].to(weight.dtype))
    return plain


def expected_snip(plain, data):
    """|w * dL/dw| with L the sum of the batches' mean cross-entropies, in plain torch."""
    weights = plain_weights(plain)
    loss = sum(F.cross_entropy(plain(x), y) for x, y in data)
    loss.backward()
    return {name: (w * w.grad).abs().detach() for name, w in weights.items()}


def assert_close_all(actual, expected, **tolerance):
    assert list(actual) == list(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name].to(actual[name].dtype), **tolerance)


# ---------------------------------------------------------------- SNIP


@pytest.mark.parametrize("with_mask", [False, True])
def test_snip_is_the_magnitude_of_weight_times_gradient(with_mask):
    plain = plain_small_model()
    model = masked(copy.deepcopy(plain))
    masks = random_masks(model) if with_mask else Masks.ones_like(model)
    data = batches()
    expected = expected_snip(zeroed(plain, masks), data)
    assert_close_all(snip_scores(model, masks, data), expected)


def test_snip_scores_what_the_masks_say_not_what_the_model_holds():
    model = small_model()
    masks = random_masks(model)
    masks.apply_to(model)
    fresh = Masks.ones_like(model)
    data = batches()
    scores = snip_scores(model, fresh, data)
    assert all(bool((scores[name][~masks[name]] == 0).all()) for name in masks)


# ---------------------------------------------------------------- GraSP


def tiny_mlp():
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


@pytest.mark.parametrize("temperature", [1.0, 200.0])
@pytest.mark.parametrize("with_mask", [False, True])
def test_grasp_is_weight_times_hessian_gradient_product(temperature, with_mask):
    plain = tiny_mlp()
    model = masked(copy.deepcopy(plain))
    masks = random_masks(model) if with_mask else Masks.ones_like(model)
    zeroed(plain, masks)
    data = batches(count=2, size=5, shape=(4,), classes=3, dtype=torch.float64)
    names = ["0.weight", "2.weight"]
    params = dict(plain.named_parameters())
    shapes = [params[name].shape for name in names]
    sizes = [shape.numel() for shape in shapes]

    def loss(flat):
        weights = {
            name: part.view(shape) for name, part, shape in zip(names, flat.split(sizes), shapes)
        }
        return sum(
            F.cross_entropy(functional_call(plain, {**params, **weights}, (x,)) / temperature, y)
            for x, y in data
        )

    theta = torch.cat([params[name].detach().reshape(-1) for name in names])
    flat_mask = torch.cat([masks[name].reshape(-1) for name in names]).double()
    gradient = torch.func.grad(loss)(theta)
    _, hg = torch.autograd.functional.hvp(loss, theta, gradient * flat_mask)
    expected = {
        name: part.view(shape)
        for name, part, shape in zip(names, (theta * hg).split(sizes), shapes)
    }

    actual = grasp_scores(model, masks, data, temperature=temperature)
    assert_close_all(actual, expected, rtol=1e-9, atol=1e-18)
    # Not -θ⊙Hg, the paper's S: the returned score is its negation.
    assert any(bool((expected[name] != 0).any()) for name in expected)


# ---------------------------------------------------------------- SynFlow


def linear_chain(bias):
    return masked(nn.Sequential(nn.Linear(3, 4, bias=bias), nn.Linear(4, 2, bias=bias)))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_synflow_closed_form_on_a_linear_chain(with_mask, bias):
    model = linear_chain(bias)
    masks = random_masks(model, 0.7) if with_mask else Masks.ones_like(model)
    w1 = (model[0].weight.detach() * masks["0.weight"]).abs().double()
    w2 = (model[1].weight.detach() * masks["1.weight"]).abs().double()
    b1 = model[0].bias.detach().abs().double() if bias else torch.zeros(4, dtype=torch.float64)
    # R = 1ᵀ (|W2| (|W1| 1 + |b1|) + |b2|) for an input of ones.
    expected = {"0.weight": w1 * w2.sum(0)[:, None], "1.weight": w2 * (w1.sum(1) + b1)[None, :]}
    actual = synflow_scores(model, masks, 3)
    assert all(score.dtype == torch.float64 for score in actual.values())
    assert_close_all(actual, expected, rtol=1e-12, atol=0)


def test_synflow_ranks_scores_beyond_the_float32_range():
    model = masked(nn.Sequential(*[nn.Linear(4, 4, bias=False) for _ in range(40)]))
    with torch.no_grad():
        for layer in model:
            layer.weight.mul_(40.0)
    masks = Masks.ones_like(model)
    scores = synflow_scores(model, masks, 4)
    assert pooled_scores(scores, masks).max() > torch.finfo(torch.float32).max
    assert bool(torch.isfinite(pooled_scores(scores, masks)).all())
    new = prune_at_init(
        model, masks, 0.3, method="synflow", input_shape=4, iterations=1, allow_empty=True
    )
    removed = {name: masks[name] & ~new[name] for name in masks}
    assert pooled_scores(scores, removed).max() <= pooled_scores(scores, new).min()


def test_iterative_synflow_hits_the_exact_count_returns_subsets_and_is_deterministic():
    model = small_model()
    masks = random_masks(model, 0.8)
    first = prune_at_init(
        model, masks, 0.1, method="synflow", input_shape=INPUT_SHAPE, iterations=7
    )
    second = prune_at_init(
        model, masks, 0.1, method="synflow", input_shape=INPUT_SHAPE, iterations=7
    )
    assert first.num_unpruned == half_up("0.1", masks.numel)
    assert first.is_subset_of(masks)
    assert first == second


def test_iterative_synflow_rescores_under_the_previous_rounds_masks():
    """Two rounds: to density ** (1/2) on the first scores, then to density on scores taken
    with the first round's masks."""
    model = small_model()
    masks = random_masks(model, 0.9)
    density = 0.2
    first = prune_to_density(
        weights_of(model),
        masks,
        density**0.5,
        scope="global",
        scores=synflow_scores(model, masks, INPUT_SHAPE),
    )
    expected = prune_to_density(
        weights_of(model),
        first,
        density,
        scope="global",
        scores=synflow_scores(model, first, INPUT_SHAPE),
    )
    actual = prune_at_init(
        model, masks, density, method="synflow", input_shape=INPUT_SHAPE, iterations=2
    )
    assert actual == expected


# ---------------------------------------------------------------- the model stays as it was


def snapshot(model):
    return (
        {key: value.clone() for key, value in model.state_dict().items()},
        Masks.from_model(model),
        [m.training for m in model.modules()],
        [getattr(m, "mode", None) for m in model.modules()],
    )


def assert_untouched(model, before):
    state, masks, training, modes = before
    after = model.state_dict()
    assert list(after) == list(state)
    assert all(torch.equal(after[key], value) for key, value in state.items())
    assert Masks.from_model(model) == masks
    assert [m.training for m in model.modules()] == training
    assert [getattr(m, "mode", None) for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", AT_INIT_METHODS)
@pytest.mark.parametrize("train", [True, False])
def test_the_model_is_untouched(method, train):
    model = small_model().train(train)
    random_masks(model, 0.9).apply_to(model)
    before = snapshot(model)
    masks = random_masks(model, 0.5)
    scores_of(method, model, masks, batches())
    prune_at_init(
        model, masks, 0.1, method=method, batches=batches(), input_shape=INPUT_SHAPE, iterations=3
    )
    assert_untouched(model, before)


@pytest.mark.parametrize("method", AT_INIT_METHODS)
def test_a_compact_layer_scores_as_its_dense_self(method):
    model = small_model()
    masks = random_masks(model)
    masks.apply_to(model)
    data = batches()
    dense = scores_of(method, model, masks, data)
    model.fc1.set_mode("compact")
    assert model.fc1.mode == "compact"
    before = snapshot(model)
    assert_close_all(scores_of(method, model, masks, data), dense)
    assert_untouched(model, before)


@pytest.mark.parametrize("method", AT_INIT_METHODS)
@pytest.mark.parametrize("device", DEVICES)
def test_scores_are_keyed_like_masks_detached_and_on_the_weights_device(method, device):
    model = small_model().to(device)
    masks = random_masks(model).to(device)
    scores = scores_of(method, model, masks, batches())
    weights = weights_of(model)
    assert list(scores) == list(masks)
    for name, score in scores.items():
        assert score.shape == weights[name].shape
        assert score.device == weights[name].device
        assert not score.requires_grad
        assert bool(torch.isfinite(score).all())


def bn_model():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, CLASSES),
    )


def test_snip_on_batchnorm_uses_batch_statistics():
    plain = bn_model()
    with torch.no_grad():  # running statistics far from the batch's: eval mode would differ
        plain[1].running_mean.fill_(3.0)
        plain[1].running_var.fill_(9.0)
    model = masked(copy.deepcopy(plain)).eval()
    masks = random_masks(model)
    data = batches()
    expected = expected_snip(zeroed(plain, masks).train(), data)
    assert_close_all(snip_scores(model, masks, data), expected)


@pytest.mark.parametrize("method", AT_INIT_METHODS)
def test_batchnorm_models_score_and_prune(method):
    model = masked(bn_model())
    before = snapshot(model)
    new = prune_at_init(
        model,
        Masks.ones_like(model),
        0.1,
        method=method,
        batches=batches(),
        input_shape=INPUT_SHAPE,
        iterations=3,
    )
    assert new.num_unpruned == half_up("0.1", new.numel)
    assert_untouched(model, before)


def test_synflow_runs_in_eval_mode_whatever_the_models_mode():
    model = masked(bn_model())
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
    masks = Masks.ones_like(model)
    assert_close_all(
        synflow_scores(model.train(), masks, INPUT_SHAPE),
        synflow_scores(model.eval(), masks, INPUT_SHAPE),
    )


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_dropout_has_no_effect_on_the_scores(method):
    plain = plain_small_model()
    model = masked(copy.deepcopy(plain))
    with_dropout = masked(
        nn.Sequential(
            plain.features, nn.Dropout(0.5), plain.flatten, plain.fc1, nn.Dropout(0.9), plain.fc2
        )
    )
    masks = Masks.ones_like(model)
    masks_with_dropout = Masks(
        {f"{index}.weight": masks[name] for index, name in zip(["0.0", "3", "5"], masks)}
    )
    data = batches()
    expected = scores_of(method, model, masks, data)
    actual = scores_of(method, with_dropout, masks_with_dropout, data)
    assert_close_all(dict(zip(expected, actual.values())), expected)


# ---------------------------------------------------------------- prune_at_init


def pooled_scores(scores, masks):
    return torch.cat([scores[name][masks[name]].double() for name in masks])


@pytest.mark.parametrize("method", AT_INIT_METHODS)
def test_global_prune_keeps_the_pooled_count_of_the_highest_scores(method):
    model = small_model()
    masks = random_masks(model, 0.9)
    data = batches()
    new = prune_at_init(
        model,
        masks,
        0.1,
        method=method,
        batches=data,
        input_shape=INPUT_SHAPE,
        iterations=1,
        allow_empty=True,
    )
    assert new.num_unpruned == half_up("0.1", masks.numel)
    assert new.is_subset_of(masks)
    scores = scores_of(method, model, masks, data)
    removed = {name: masks[name] & ~new[name] for name in masks}
    assert pooled_scores(scores, removed).max() <= pooled_scores(scores, new).min()


@pytest.mark.parametrize("method", AT_INIT_METHODS)
def test_layerwise_prune_keeps_each_layers_count(method):
    model = small_model()
    masks = Masks.ones_like(model)
    new = prune_at_init(
        model,
        masks,
        0.1,
        method=method,
        batches=batches(),
        input_shape=INPUT_SHAPE,
        scope="layerwise",
        iterations=4,
    )
    for name in masks:
        assert kept(new[name]) == half_up("0.1", masks[name].numel())


@pytest.mark.parametrize("method", AT_INIT_METHODS)
def test_exclude_and_layer_densities(method):
    model = small_model()
    masks = random_masks(model, 0.9)
    names = list(masks)
    new = prune_at_init(
        model,
        masks,
        0.1,
        method=method,
        batches=batches(),
        input_shape=INPUT_SHAPE,
        exclude=[names[0]],
        layer_densities={names[2]: 0.5},
        iterations=4,
    )
    assert torch.equal(new[names[0]], masks[names[0]])
    assert kept(new[names[1]]) == half_up("0.1", masks[names[1]].numel())
    assert kept(new[names[2]]) == half_up("0.5", masks[names[2]].numel())


def groups_of_four_keep_at_most_two(mask):
    rows = mask.reshape(mask.shape[0], -1)
    padding = (-rows.shape[1]) % 4
    rows = torch.cat([rows, rows.new_zeros(rows.shape[0], padding)], dim=1)
    return bool((rows.view(rows.shape[0], -1, 4).sum(-1) <= 2).all())


@pytest.mark.parametrize("method", AT_INIT_METHODS)
def test_nm_pattern_is_passed_through(method):
    model = small_model()
    new = prune_at_init(
        model,
        Masks.ones_like(model),
        0.4,
        method=method,
        batches=batches(),
        input_shape=INPUT_SHAPE,
        nm=(2, 4),
        iterations=3,
    )
    assert all(groups_of_four_keep_at_most_two(mask) for mask in new.values())
    assert new.num_unpruned <= half_up("0.4", new.numel)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "arguments, error, names",
    [
        (dict(method="magnitude"), ValueError, "'magnitude'"),
        (dict(method="synflow", iterations=0), ValueError, "0"),
        (dict(method="synflow", input_shape=None), ValueError, "None"),
        (dict(method="synflow", input_shape=(1, 0, 6)), ValueError, "(1, 0, 6)"),
        (dict(method="snip", batches=()), ValueError, "snip"),
        (dict(method="grasp", batches=[]), ValueError, "grasp"),
        (dict(method="snip", batches=[torch.zeros(2)]), TypeError, "Tensor"),
        (dict(method="snip", scope="pooled"), ValueError, "'pooled'"),
        (dict(method="snip", layer_densities={"fc1": 0.5}), ValueError, "'fc1'"),
        (dict(method="snip", layer_densities={"fc1.weight": 1.5}), ValueError, "1.5"),
    ],
)
def test_bad_arguments_raise_one_line_errors_naming_the_value(arguments, error, names):
    model = small_model()
    arguments = {"batches": batches(), "input_shape": INPUT_SHAPE, **arguments}
    with pytest.raises(error) as raised:
        prune_at_init(model, Masks.ones_like(model), 0.1, **arguments)
    assert one_line(raised) and names in str(raised.value)


@pytest.mark.parametrize("density", [0, 1.5, -0.1])
def test_density_outside_the_unit_interval_is_refused(density):
    model = small_model()
    with pytest.raises(ValueError) as raised:
        prune_at_init(model, Masks.ones_like(model), density, method="snip", batches=batches())
    assert one_line(raised) and repr(density) in str(raised.value)


def test_bad_temperature_and_masks_raise_one_line_errors():
    model = small_model()
    with pytest.raises(ValueError) as raised:
        grasp_scores(model, Masks.ones_like(model), batches(), temperature=0.0)
    assert one_line(raised) and "0.0" in str(raised.value)
    masks = {name: mask for name, mask in Masks.ones_like(model).items() if name != "fc2.weight"}
    with pytest.raises(ValueError) as raised:
        snip_scores(model, masks, batches())
    assert one_line(raised) and "'fc2.weight'" in str(raised.value)
