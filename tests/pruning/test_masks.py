import pytest
import torch
from torch import nn

from sparse_tickets import MaskedLinear, masked
from sparse_tickets.pruning import Masks, weights_of
from tests.conftest import DEVICES
from tests.pruning.helpers import one_line, small_model

NAMES = ["features.0.weight", "fc1.weight", "fc2.weight"]


def pruned_masks(model, density=0.5):
    return Masks({name: torch.rand_like(w) < density for name, w in weights_of(model).items()})


# ---------------------------------------------------------------- construction


def test_zero_one_values_become_bool():
    masks = Masks({"w": torch.tensor([[0, 1], [1, 0]]), "v": torch.tensor([1.0, 0.0])})
    assert masks["w"].dtype == torch.bool and masks["w"].tolist() == [[False, True], [True, False]]
    assert masks["v"].tolist() == [True, False]


@pytest.mark.parametrize(
    "value, error_type, message",
    [
        (
            torch.tensor([0, 2]),
            ValueError,
            r"masks\['fc1.weight'\] holds the value 2; expected only",
        ),
        (torch.tensor([0.5]), ValueError, r"masks\['fc1.weight'\] holds the value 0.5"),
        ([1, 0], TypeError, r"masks\['fc1.weight'\] is a list; expected a bool tensor"),
    ],
)
def test_non_binary_values_name_the_key(value, error_type, message):
    with pytest.raises(error_type, match=message) as error:
        Masks({"fc1.weight": value})
    assert one_line(error)


def test_bad_containers_and_names_are_refused():
    with pytest.raises(TypeError, match="expects a mapping"):
        Masks([("w", torch.ones(2, dtype=torch.bool))])
    with pytest.raises(TypeError, match="non-empty strings; got 3"):
        Masks({3: torch.ones(2, dtype=torch.bool)})


def test_masks_is_an_ordered_read_only_mapping():
    masks = Masks({"z": torch.ones(1, dtype=torch.bool), "a": torch.zeros(2, dtype=torch.bool)})
    assert list(masks) == ["z", "a"] and len(masks) == 2 and "a" in masks
    with pytest.raises(TypeError):
        masks["a"] = torch.ones(2, dtype=torch.bool)
    assert repr(masks) == "Masks(2 layers, density=0.3333)"


# ---------------------------------------------------------------- from a model


def test_from_model_names_the_weights_as_in_the_state_dict_in_module_order():
    model = small_model()
    masks = Masks.from_model(model)
    assert list(masks) == NAMES
    assert all(name in model.state_dict() for name in masks)
    assert all(mask.dtype == torch.bool and mask.all() for mask in masks.values())


def test_from_model_is_a_snapshot_not_a_view():
    model = small_model()
    masks = Masks.from_model(model)
    model.fc1.set_mask(torch.zeros_like(model.fc1.mask))
    assert masks["fc1.weight"].all()


def test_a_model_that_is_itself_a_layer_has_the_key_weight():
    layer = MaskedLinear(3, 2)
    assert list(Masks.from_model(layer)) == ["weight"]
    assert list(weights_of(layer)) == ["weight"]


def test_a_model_without_masked_layers_is_refused():
    with pytest.raises(
        ValueError,
        match="Sequential has no masked layers; expected a model "
        "converted with sparse_tickets.masked",
    ):
        Masks.from_model(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(TypeError, match="expected a torch.nn.Module; got dict"):
        Masks.ones_like({})


def test_ones_like_covers_every_masked_layer_and_prunes_nothing():
    model = small_model()
    ones = Masks.ones_like(model)
    assert list(ones) == NAMES and ones.density == 1.0
    assert all(ones[name].shape == w.shape for name, w in weights_of(model).items())


def test_weights_of_gives_detached_weights_under_the_mask_names():
    model = small_model()
    weights = weights_of(model)
    assert list(weights) == NAMES
    assert not any(w.requires_grad for w in weights.values())
    assert torch.equal(weights["fc2.weight"], model.fc2.weight)


# ---------------------------------------------------------------- applying


def test_apply_to_sets_the_masks_and_zeroes_the_pruned_weights():
    model = small_model()
    masks = pruned_masks(model)
    masks.apply_to(model)
    assert Masks.from_model(model) == masks
    for name, weight in weights_of(model).items():
        assert (weight[~masks[name]] == 0).all()
        assert (weight[masks[name]] != 0).all()


def test_apply_to_lists_missing_and_unexpected_names_and_changes_nothing():
    model = small_model()
    masks = pruned_masks(model)
    wrong = Masks(
        {
            "fc1.weight": masks["fc1.weight"],
            "fc3.weight": masks["fc2.weight"],
            "features.0.weight": masks["features.0.weight"],
        }
    )
    with pytest.raises(ValueError, match="missing 'fc2.weight'; unexpected 'fc3.weight'$") as error:
        wrong.apply_to(model)
    assert one_line(error)
    assert Masks.from_model(model).density == 1.0


def test_apply_to_names_the_layer_and_both_shapes_on_a_shape_mismatch():
    model = small_model()
    masks = Masks({**pruned_masks(model), "fc2.weight": torch.ones(7, 5, dtype=torch.bool)})
    with pytest.raises(
        ValueError,
        match=r"masks\['fc2.weight'\] has shape \(7, 5\); expected "
        r"the layer's weight shape \(5, 7\)",
    ):
        masks.apply_to(model)
    assert Masks.from_model(model).density == 1.0


def test_apply_to_shared_layer_sets_it_once():
    shared = nn.Linear(4, 4)
    model = masked(nn.Sequential(shared, nn.ReLU(), shared))
    masks = Masks.from_model(model)
    assert list(masks) == ["0.weight"]
    pruned_masks(model).apply_to(model)
    assert model[0] is model[2]


@pytest.mark.parametrize("device", DEVICES)
def test_cpu_masks_apply_to_a_model_on_any_device(device):
    model = small_model().to(device)
    masks = pruned_masks(model).to("cpu")
    masks.apply_to(model)
    assert Masks.from_model(model).to("cpu") == masks
    assert all(mask.device.type == device for mask in Masks.from_model(model).values())


# ---------------------------------------------------------------- figures and comparisons


def test_density_figures_add_up_over_layers():
    masks = Masks(
        {
            "a": torch.tensor([True, False, False, False]),
            "b": torch.tensor([[True, True], [True, False]]),
        }
    )
    assert masks.numel == 8 and masks.num_unpruned == 4
    assert masks.density == 0.5 and masks.sparsity == 0.5
    rows = masks.density_rows()
    assert [(row.name, row.kept, row.total) for row in rows] == [("a", 1, 4), ("b", 3, 4)]
    assert Masks().density == 0.0 and Masks().numel == 0


def test_is_subset_of_checks_every_kept_weight():
    big = Masks({"a": torch.tensor([True, True, False]), "b": torch.tensor([True])})
    small = Masks({"a": torch.tensor([True, False, False]), "b": torch.tensor([True])})
    other = Masks({"a": torch.tensor([False, False, True]), "b": torch.tensor([True])})
    assert small.is_subset_of(big) and big.is_subset_of(big)
    assert not big.is_subset_of(small) and not other.is_subset_of(big)


def test_is_subset_of_refuses_different_layers_or_shapes():
    masks = Masks({"a": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="missing from the other 'a'; only in the other 'b'"):
        masks.is_subset_of({"b": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"shape \(3,\) here, \(4,\) in the other"):
        masks.is_subset_of({"a": torch.ones(4, dtype=torch.bool)})


def test_equality_compares_every_element_of_every_layer():
    masks = Masks({"a": torch.tensor([True, False]), "b": torch.tensor([True])})
    assert masks == Masks({"a": torch.tensor([1, 0]), "b": torch.tensor([1])})
    assert masks == {"a": torch.tensor([True, False]), "b": torch.tensor([True])}
    assert masks != Masks({"a": torch.tensor([True, True]), "b": torch.tensor([True])})
    assert masks != Masks({"a": torch.tensor([True, False])})
    assert masks != "masks"


@pytest.mark.parametrize("device", DEVICES)
def test_to_moves_every_mask(device):
    masks = Masks({"a": torch.tensor([True, False])})
    moved = masks.to(device)
    assert moved["a"].device.type == device and moved == masks


# ---------------------------------------------------------------- the meta device


def test_masks_of_a_meta_model_move_and_apply_but_refuse_to_read_values(tmp_path):
    with torch.device("meta"):
        model = masked(nn.Sequential(nn.Linear(4, 3), nn.Embedding(5, 2)))
    masks = Masks.from_model(model)
    assert all(mask.is_meta for mask in masks.values())
    assert repr(masks) == "Masks(2 layers, on the meta device)"
    assert Masks.ones_like(model).to("meta")["0.weight"].is_meta
    Masks({"0.weight": torch.ones(3, 4), "1.weight": torch.ones(5, 2)}).apply_to(model)
    assert Masks({"w": torch.ones(2, 2, device="meta")})["w"].dtype == torch.bool
    real = Masks(
        {
            "0.weight": torch.ones(3, 4, dtype=torch.bool),
            "1.weight": torch.ones(5, 2, dtype=torch.bool),
        }
    )
    refusals = [
        ("counting the kept weights", lambda: masks.density),
        ("a density table", masks.density_report),
        ("comparing masks", lambda: masks == real),
        ("comparing masks", lambda: real.is_subset_of(masks)),
        ("copying masks to cpu", lambda: masks.to("cpu")),
        ("saving masks", lambda: masks.save(tmp_path / "masks.pt")),
        (
            "pruning Sequential with torch",
            lambda: masks.to_torch_prune(nn.Sequential(nn.Linear(4, 3), nn.Embedding(5, 2))),
        ),
    ]
    for what, call in refusals:
        with pytest.raises(
            ValueError,
            match=f"^{what} needs the masks' values, and masks .* are on the meta device",
        ) as error:
            call()
        assert one_line(error)
    model.to_empty(device="cpu")
    with pytest.raises(ValueError, match="applying masks to a model on cpu needs the masks'"):
        masks.apply_to(model)
    assert Masks.from_model(model) == real  # full, and untouched by the refusal
    assert not (tmp_path / "masks.pt").exists()
