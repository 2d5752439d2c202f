import math

import pytest
import torch

from sparse_tickets.pruning import Masks, prune, prune_to_density, weights_of
from tests.conftest import DEVICES
from tests.pruning.helpers import half_up, kept, one_line, small_model

SHAPES = {"a": (1, 1), "b": (3, 5), "c": (7,), "d": (2, 3, 5), "e": (101,)}


def random_layers(shapes=SHAPES, density=1.0):
    weights = {name: torch.randn(shape) for name, shape in shapes.items()}
    masks = Masks({name: torch.rand(shape) < density for name, shape in shapes.items()})
    return weights, masks


def removed_and_kept(weights, before, after, name):
    """Magnitudes of the weights a pruning step removed, and of those it kept."""
    magnitudes = weights[name].abs()
    return magnitudes[before[name] & ~after[name]], magnitudes[after[name]]


# ---------------------------------------------------------------- layerwise


@pytest.mark.parametrize("fraction", ["0", "0.1", "0.2", "0.5", "0.7"])
@pytest.mark.parametrize("density", [1.0, 0.6])
def test_layerwise_removes_the_rounded_fraction_of_each_layers_remaining(fraction, density):
    weights, masks = random_layers(density=density)
    new = prune(weights, masks, float(fraction), allow_empty=True)
    for name in masks:
        assert kept(new[name]) == kept(masks[name]) - half_up(fraction, kept(masks[name]))


@pytest.mark.parametrize(
    "fraction, n, expected_removed",
    [("0.5", 7, 4), ("0.7", 15, 11), ("0.1", 15, 2), ("0.3", 5, 2), ("0.5", 3, 2)],
)
def test_layerwise_rounds_halves_up(fraction, n, expected_removed):
    weights = {"w": torch.randn(n)}
    new = prune(weights, Masks({"w": torch.ones(n, dtype=torch.bool)}), float(fraction))
    assert n - kept(new["w"]) == expected_removed


def test_layerwise_removes_the_smallest_magnitudes_of_each_layer():
    weights, masks = random_layers(density=0.7)
    new = prune(weights, masks, 0.4)
    for name in masks:
        removed, survivors = removed_and_kept(weights, masks, new, name)
        if removed.numel() and survivors.numel():
            assert removed.max() <= survivors.min()


def test_pruning_returns_new_masks_and_touches_neither_model_nor_input():
    model = small_model()
    masks = Masks.from_model(model)
    snapshot = {name: mask.clone() for name, mask in masks.items()}
    weights_before = {name: w.clone() for name, w in weights_of(model).items()}
    new = prune(weights_of(model), masks, 0.5)
    assert masks == snapshot
    assert Masks.from_model(model) == snapshot
    assert all(torch.equal(w, weights_before[name]) for name, w in weights_of(model).items())
    assert all(new[name] is not masks[name] for name in masks)
    assert list(new) == list(masks)


# ---------------------------------------------------------------- global


def test_global_prunes_the_globally_smallest_where_layerwise_would_not():
    weights = {
        "big": torch.tensor([[4.0, 5.0, 6.0], [7.0, 8.0, 10.0]]),
        "small": torch.tensor([1.0, -2.0, 3.0, 9.0]),
    }
    masks = Masks({name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()})
    global_masks = prune(weights, masks, 0.3, scope="global")
    assert global_masks["big"].all()
    assert global_masks["small"].tolist() == [False, False, False, True]
    layerwise = prune(weights, masks, 0.3)
    assert layerwise["big"].tolist() == [[False, False, True], [True, True, True]]
    assert layerwise["small"].tolist() == [False, True, True, True]


@pytest.mark.parametrize("fraction", ["0.2", "0.5", "0.65"])
def test_global_removes_exactly_k_of_all_remaining_below_one_threshold(fraction):
    weights, masks = random_layers(density=0.8)
    new = prune(weights, masks, float(fraction), scope="global", allow_empty=True)
    assert masks.num_unpruned - new.num_unpruned == half_up(fraction, masks.num_unpruned)
    removed = torch.cat([removed_and_kept(weights, masks, new, name)[0] for name in masks])
    survivors = torch.cat([removed_and_kept(weights, masks, new, name)[1] for name in masks])
    assert removed.max() <= survivors.min()


# ---------------------------------------------------------------- overrides, exclusion


def test_layer_fractions_override_the_fraction_for_those_layers():
    weights, masks = random_layers()
    new = prune(weights, masks, 0.5, layer_fractions={"e": 0.1, "d": 0.25}, allow_empty=True)
    assert 101 - kept(new["e"]) == half_up("0.1", 101)
    assert 30 - kept(new["d"]) == half_up("0.25", 30)
    assert 15 - kept(new["b"]) == half_up("0.5", 15)


def test_global_with_layer_fractions_pools_only_the_other_layers():
    weights, masks = random_layers()
    new = prune(weights, masks, 0.5, scope="global", layer_fractions={"e": 0.1}, allow_empty=True)
    assert 101 - kept(new["e"]) == half_up("0.1", 101)
    pooled = [name for name in masks if name != "e"]
    pooled_total = sum(masks[name].numel() for name in pooled)
    assert pooled_total - sum(kept(new[name]) for name in pooled) == half_up("0.5", pooled_total)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_excluded_layers_keep_their_masks_and_do_not_count(scope):
    weights, masks = random_layers(density=0.9)
    new = prune(weights, masks, 0.5, scope=scope, exclude=["e", "a"], allow_empty=True)
    assert torch.equal(new["e"], masks["e"]) and torch.equal(new["a"], masks["a"])
    included = ["b", "c", "d"]
    remaining = sum(kept(masks[name]) for name in included)
    expected = (
        half_up("0.5", remaining)
        if scope == "global"
        else sum(half_up("0.5", kept(masks[name])) for name in included)
    )
    assert remaining - sum(kept(new[name]) for name in included) == expected


def test_a_single_excluded_name_may_be_a_string():
    weights, masks = random_layers()
    assert torch.equal(prune(weights, masks, 0.5, exclude="e", allow_empty=True)["e"], masks["e"])


# ---------------------------------------------------------------- iterative pruning


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_five_levels_only_remove_and_follow_the_geometric_schedule(scope):
    model = small_model()
    masks = Masks.from_model(model)
    for level in range(1, 6):
        new = prune(weights_of(model), masks, 0.2, scope=scope)
        assert new.is_subset_of(masks)
        assert new.density < masks.density
        new.apply_to(model)
        # Each level rounds by at most half a weight, and earlier errors shrink by 0.8.
        assert abs(new.num_unpruned - new.numel * 0.8**level) <= 0.5 * level * len(new)
        if scope == "layerwise":
            for _name, mask in new.items():
                assert abs(kept(mask) - mask.numel() * 0.8**level) <= 0.5 * level
        masks = new


# ---------------------------------------------------------------- ties and dtypes


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_equal_scores_prune_the_first_positions_first(scope):
    weights = {"first": torch.ones(2, 3), "second": torch.ones(5)}
    masks = Masks({name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()})
    new = prune(weights, masks, 0.5, scope=scope, allow_empty=True)
    assert prune(weights, masks, 0.5, scope=scope, allow_empty=True) == new
    if scope == "layerwise":
        assert new["first"].tolist() == [[False, False, False], [True, True, True]]
        assert new["second"].tolist() == [False, False, False, True, True]
    else:  # 6 of 11: the whole first layer goes before any of the second
        assert not new["first"].any()
        assert new["second"].tolist() == [True] * 5


def test_ties_among_remaining_weights_skip_pruned_positions():
    weights = {"w": torch.ones(6)}
    masks = Masks({"w": torch.tensor([False, True, False, True, True, True])})
    assert prune(weights, masks, 0.5)["w"].tolist() == [False, False, False, False, True, True]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_weights_rank_exactly(dtype):
    weights = {"w": torch.randn(200).to(dtype), "v": torch.randn(50).to(dtype)}
    masks = Masks({name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()})
    exact = {name: w.double() for name, w in weights.items()}
    for scope in ("layerwise", "global"):
        assert prune(weights, masks, 0.37, scope=scope) == prune(exact, masks, 0.37, scope=scope)


# ---------------------------------------------------------------- random strategy


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_random_strategy_removes_the_same_counts_as_magnitude(scope):
    weights, masks = random_layers(density=0.8)
    by_magnitude = prune(weights, masks, 0.4, scope=scope, allow_empty=True)
    at_random = prune(weights, masks, 0.4, strategy="random", scope=scope, seed=3, allow_empty=True)
    assert at_random.is_subset_of(masks)
    if scope == "layerwise":
        assert [kept(m) for m in at_random.values()] == [kept(m) for m in by_magnitude.values()]
    assert at_random.num_unpruned == by_magnitude.num_unpruned
    assert at_random != by_magnitude


def test_random_strategy_is_deterministic_per_seed():
    weights, masks = random_layers()
    first = prune(weights, masks, 0.5, strategy="random", seed=7, allow_empty=True)
    assert prune(weights, masks, 0.5, strategy="random", seed=7, allow_empty=True) == first
    assert prune(weights, masks, 0.5, strategy="random", seed=8, allow_empty=True) != first


# ---------------------------------------------------------------- given scores


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_scores_equal_to_the_magnitudes_give_magnitude_pruning(scope):
    weights, masks = random_layers(density=0.8)
    magnitudes = {name: w.abs() for name, w in weights.items()}
    assert prune(weights, masks, 0.4, scope=scope, scores=magnitudes, allow_empty=True) == prune(
        weights, masks, 0.4, scope=scope, allow_empty=True
    )
    assert prune_to_density(
        weights, masks, 0.3, scope=scope, scores=magnitudes, allow_empty=True
    ) == prune_to_density(weights, masks, 0.3, scope=scope, allow_empty=True)


def test_scores_replace_the_strategys_ranking():
    weights = {"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    masks = Masks({"w": torch.ones(4, dtype=torch.bool)})
    scores = {"w": torch.tensor([4.0, 3.0, 2.0, 1.0])}
    assert prune(weights, masks, 0.5, scores=scores)["w"].tolist() == [True, True, False, False]
    # The strategy is ignored when scores are given.
    assert prune(weights, masks, 0.5, strategy="random", scores=scores) == prune(
        weights, masks, 0.5, scores=scores
    )


def test_scores_are_needed_only_for_the_layers_pruned():
    weights, masks = layers()
    scores = {"fc1.weight": weights["fc1.weight"].abs()}
    new = prune(weights, masks, 0.5, scores=scores, exclude=["fc2.weight"])
    assert new == prune(weights, masks, 0.5, exclude=["fc2.weight"])


@pytest.mark.parametrize(
    "bad_scores, error_type, message",
    [
        (
            lambda w: {"fc1.weight": w["fc1.weight"].abs()},
            ValueError,
            "^scores has no entry for 'fc2.weight'; expected a score tensor for every layer "
            "that is pruned$",
        ),
        (
            lambda w: {**w, "fc2.weight": torch.rand(3, 2)},
            ValueError,
            r"^scores\['fc2.weight'\] has shape \(3, 2\); expected the weight's shape \(2, 3\)$",
        ),
        (
            lambda w: {**w, "fc2.weight": [[1.0, 2.0, 3.0]] * 2},
            TypeError,
            r"^scores\['fc2.weight'\] is a list; expected a tensor of the weight's shape \(2, 3\)$",
        ),
        (
            lambda w: {**w, "fc2.weight": torch.full((2, 3), math.nan)},
            ValueError,
            "^the given scores: scores of 'fc2.weight' hold NaN",
        ),
        (
            lambda w: [w["fc1.weight"], w["fc2.weight"]],
            TypeError,
            "^scores must be a mapping of layer name -> score tensor; got list$",
        ),
    ],
)
@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_bad_scores_raise_one_line_errors(bad_scores, error_type, message, scope):
    weights, masks = layers()
    masks = Masks({name: torch.ones_like(m) for name, m in masks.items()})
    for call in (
        lambda: prune(weights, masks, 0.5, scope=scope, scores=bad_scores(weights)),
        lambda: prune_to_density(weights, masks, 0.5, scope=scope, scores=bad_scores(weights)),
    ):
        with pytest.raises(error_type, match=message) as error:
            call()
        assert one_line(error)


# ---------------------------------------------------------------- one shot to a density


@pytest.mark.parametrize("density", ["0.05", "0.2", "0.5", "1"])
def test_prune_to_density_keeps_the_rounded_share_of_each_layers_total(density):
    weights, masks = random_layers()
    new = prune_to_density(weights, masks, float(density), allow_empty=True)
    for name, mask in new.items():
        assert kept(mask) == half_up(density, mask.numel())
        removed, survivors = removed_and_kept(weights, masks, new, name)
        if removed.numel() and survivors.numel():
            assert removed.max() <= survivors.min()


def test_prune_to_density_counts_against_the_total_and_leaves_sparser_layers_alone():
    weights = {"dense": torch.randn(20), "sparse": torch.randn(20)}
    masks = Masks({"dense": torch.ones(20, dtype=torch.bool), "sparse": torch.arange(20) < 4})
    new = prune_to_density(weights, masks, 0.5)
    assert kept(new["dense"]) == 10
    assert torch.equal(new["sparse"], masks["sparse"])


def test_prune_to_density_global_hits_the_target_over_included_layers():
    weights, masks = random_layers(density=0.9)
    new = prune_to_density(
        weights,
        masks,
        0.3,
        scope="global",
        exclude=["a"],
        layer_densities={"c": 0.5},
        allow_empty=True,
    )
    assert torch.equal(new["a"], masks["a"])
    assert kept(new["c"]) == half_up("0.5", 7)
    pooled = ["b", "d", "e"]
    assert sum(kept(new[name]) for name in pooled) == half_up(
        "0.3", sum(masks[name].numel() for name in pooled)
    )
    assert new.is_subset_of(masks)


# ---------------------------------------------------------------- empty layers


def test_emptying_a_layer_is_refused_unless_allowed():
    weights = {"tiny": torch.randn(1), "big": torch.randn(10)}
    masks = Masks({name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()})
    with pytest.raises(ValueError, match="'tiny' with no weights.*allow_empty=True") as error:
        prune(weights, masks, 0.5)
    assert one_line(error)
    assert not prune(weights, masks, 0.5, allow_empty=True)["tiny"].any()


def test_global_pruning_that_empties_a_small_layer_is_refused_unless_allowed():
    weights = {"small": torch.full((2,), 0.01), "big": torch.randn(20).abs() + 1}
    masks = Masks({name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()})
    with pytest.raises(ValueError, match="'small' with no weights"):
        prune(weights, masks, 0.2, scope="global")
    with pytest.raises(ValueError, match="'small' with no weights"):
        prune_to_density(weights, masks, 0.01, scope="global")
    assert not prune(weights, masks, 0.2, scope="global", allow_empty=True)["small"].any()


def test_an_already_empty_layer_is_no_error():
    weights = {"empty": torch.randn(3), "full": torch.randn(4)}
    masks = Masks(
        {"empty": torch.zeros(3, dtype=torch.bool), "full": torch.ones(4, dtype=torch.bool)}
    )
    assert kept(prune(weights, masks, 0.5)["full"]) == 2


# ---------------------------------------------------------------- validation


def layers():
    return random_layers({"fc1.weight": (3, 4), "fc2.weight": (2, 3)})


@pytest.mark.parametrize(
    "call, error_type, message",
    [
        (lambda w, m: prune(w, m, 1.0), ValueError, r"^fraction must be in \[0, 1\); got 1.0$"),
        (lambda w, m: prune(w, m, -0.1), ValueError, r"^fraction must be in \[0, 1\); got -0.1$"),
        (lambda w, m: prune(w, m, math.nan), ValueError, r"fraction must be in \[0, 1\)"),
        (lambda w, m: prune(w, m, True), TypeError, "fraction must be a number; got bool"),
        (lambda w, m: prune(w, m, "0.2"), TypeError, "fraction must be a number; got str"),
        (lambda w, m: prune_to_density(w, m, 0.0), ValueError, r"density must be in \(0, 1\]"),
        (lambda w, m: prune_to_density(w, m, 1.5), ValueError, r"density must be in \(0, 1\]"),
        (
            lambda w, m: prune(w, m, 0.2, scope="per-layer"),
            ValueError,
            "scope must be one of 'layerwise', 'global'; got 'per-layer'",
        ),
        (
            lambda w, m: prune(w, m, 0.2, strategy="snip"),
            ValueError,
            "unknown strategy 'snip'; expected one of 'magnitude', 'random'",
        ),
        (
            lambda w, m: prune(w, m, 0.2, exclude=["fc9.weight"]),
            ValueError,
            "exclude names layers not in the masks: 'fc9.weight'; expected names such as "
            "'fc1.weight', 'fc2.weight'",
        ),
        (
            lambda w, m: prune(w, m, 0.2, layer_fractions={"fc2": 0.1}),
            ValueError,
            r"layer_fractions names layers not in the masks: 'fc2' \(did you mean 'fc2.weight'\?\)",
        ),
        (
            lambda w, m: prune_to_density(w, m, 0.2, layer_densities={"x": 0.1}),
            ValueError,
            "layer_densities names layers not in the masks: 'x'",
        ),
        (
            lambda w, m: prune(w, m, 0.2, layer_fractions={"fc2.weight": 1.0}),
            ValueError,
            r"layer_fractions\['fc2.weight'\] must be in \[0, 1\); got 1.0",
        ),
        (
            lambda w, m: prune(
                w, m, 0.2, exclude=["fc2.weight"], layer_fractions={"fc2.weight": 0.1}
            ),
            ValueError,
            "'fc2.weight' both excluded and given a value in layer_fractions",
        ),
        (lambda w, m: prune(w, m, 0.2, exclude=3), TypeError, "exclude must be a collection"),
        (
            lambda w, m: prune(w, m, 0.2, strategy="random", seed="1"),
            TypeError,
            "seed must be an int or None; got str",
        ),
        (
            lambda w, m: prune({**w, "fc2.weight": torch.randn(3, 2)}, m, 0.2),
            ValueError,
            r"weights\['fc2.weight'\] has shape \(3, 2\); expected its mask's shape \(2, 3\)",
        ),
        (
            lambda w, m: prune(
                {"fc1.weight": w["fc1.weight"], "fc3.weight": w["fc2.weight"]}, m, 0.2
            ),
            ValueError,
            "weights and masks name different layers: missing from weights 'fc2.weight'; "
            "not in masks 'fc3.weight'",
        ),
        (
            lambda w, m: prune({**w, "fc1.weight": [1.0]}, m, 0.2),
            TypeError,
            r"weights\['fc1.weight'\] is a list; expected a tensor",
        ),
        (
            lambda w, m: prune(w, {**m, "fc1.weight": torch.full((3, 4), 2)}, 0.2),
            ValueError,
            r"masks\['fc1.weight'\] holds the value 2",
        ),
    ],
)
def test_bad_arguments_raise_one_line_errors(call, error_type, message):
    weights, masks = layers()
    with pytest.raises(error_type, match=message) as error:
        call(weights, masks)
    assert one_line(error)


def test_a_model_passed_as_weights_points_to_weights_of():
    model = small_model()
    with pytest.raises(TypeError, match=r"got a model \(pass weights_of\(model\)\)"):
        prune(model, Masks.from_model(model), 0.2)


def test_nan_weights_among_the_remaining_are_refused():
    weights, masks = layers()
    weights["fc2.weight"][1, 2] = math.nan
    masks = Masks({**masks, "fc2.weight": torch.ones(2, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="scores of 'fc2.weight' hold NaN"):
        prune(weights, masks, 0.2)


# ---------------------------------------------------------------- devices


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("strategy", ["magnitude", "random"])
def test_pruning_on_a_device_keeps_the_masks_device_and_counts(device, strategy):
    model = small_model().to(device)
    masks = Masks.from_model(model)
    new = prune(weights_of(model), masks, 0.3, strategy=strategy, scope="global", seed=0)
    assert all(mask.device.type == device for mask in new.values())
    assert masks.num_unpruned - new.num_unpruned == half_up("0.3", masks.num_unpruned)
    assert new.is_subset_of(masks)
    on_cpu = prune(weights_of(model), masks.to("cpu"), 0.3, strategy=strategy, seed=0)
    assert all(mask.device.type == "cpu" for mask in on_cpu.values())
