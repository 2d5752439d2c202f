"""What a run's stored files must mean: each check says what is wrong in one line, or None."""

import math
from pathlib import Path

import pytest
import torch

from sparse_tickets import models
from sparse_tickets.lottery.artifacts import (
    Reference,
    divergence_of,
    masks_relation_problem,
    metrics_problem,
)
from sparse_tickets.lottery.runs import Level
from sparse_tickets.pruning import Masks, prune, weights_of
from tests.lottery.report.fabricate import metrics as fabricated_metrics


@pytest.fixture(scope="module")
def model():
    return models.create("lenet_300_100")


@pytest.fixture(scope="module")
def reference(model):
    return Reference(model)


@pytest.fixture(scope="module")
def pruned(model):
    """Masks of the model one layerwise pruning step in."""
    return prune(weights_of(model), Masks.ones_like(model), 0.2, scope="layerwise")


def _masked_state(model, masks):
    copy = models.create("lenet_300_100")
    copy.load_state_dict(model.state_dict())
    masks.apply_to(copy)
    return copy.state_dict()


def test_the_models_own_state_and_masks_pass(model, reference, pruned):
    assert reference.state_problem(model.state_dict()) is None
    assert reference.state_problem(_masked_state(model, pruned), pruned) is None
    assert reference.masks_problem(dict(pruned)) is None


@pytest.mark.parametrize(
    "change, problem",
    [
        (
            lambda s: s.pop("output.bias"),
            "holds other tensors than the model's (missing 'output.bias'; unexpected none)",
        ),
        (
            lambda s: s.update(extra=torch.ones(1)),
            "holds other tensors than the model's (missing none; unexpected 'extra')",
        ),
        (
            lambda s: s.update({"output.weight": torch.zeros(10, 99)}),
            "'output.weight' has shape (10, 99); expected (10, 100)",
        ),
        (
            lambda s: s.update({"output.bias": s["output.bias"].double()}),
            "'output.bias' is torch.float64; expected torch.float32",
        ),
        (lambda s: s["output.bias"].fill_(math.inf), "'output.bias' holds NaN or infinite values"),
        (lambda s: s.update({"output.mask": [1, 2]}), "'output.mask' is a list; expected a tensor"),
    ],
)
def test_a_state_that_is_not_the_models_says_what_differs(model, reference, change, problem):
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    change(state)
    assert reference.state_problem(state) == problem


def test_a_state_with_another_levels_masks_or_weights_where_pruned_is_named(
    model, reference, pruned
):
    dense = model.state_dict()
    assert reference.state_problem(dense, pruned) == (
        "its mask 'hidden.1.mask' is not the level's (100.0% where the level's masks keep "
        "80.0%): it belongs to another level"
    )
    unzeroed = {**_masked_state(model, pruned), "hidden.1.weight": dense["hidden.1.weight"]}
    assert reference.state_problem(unzeroed, pruned) == (
        "'hidden.1.weight' is nonzero where the level's masks prune it"
    )


def test_masks_must_be_bool_masks_of_every_masked_layer(reference, pruned):
    assert (
        reference.masks_problem({**pruned, "hidden.1.weight": pruned["hidden.1.weight"].float()})
        == "'hidden.1.weight' is torch.float32; expected torch.bool"
    )
    assert reference.masks_problem({"hidden.1.weight": pruned["hidden.1.weight"]}) == (
        "holds masks of other layers than the model's (missing 'hidden.3.weight', "
        "'output.weight'; unexpected none)"
    )
    assert reference.masks_problem([1]) == "holds a list; expected a dict of bool tensors"


def test_masks_only_shrink_from_level_to_level(model, pruned):
    ones = Masks.ones_like(model)
    assert masks_relation_problem(pruned, ones) is None
    assert masks_relation_problem(ones, pruned) == (
        "keeps weights that the level before pruned (100.0% kept, 80.0% before): pruning only "
        "removes"
    )


LEVEL = Level(Path("run/main/level_1"))


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda m: m.pop("evaluations"), "has no evaluations; expected a list of them"),
        (lambda m: m.pop("iterations"), "has iterations None; expected a count"),
        (
            lambda m: m.update(final_test_accuracy=1.5),
            "has final_test_accuracy 1.5; expected a number from 0 to 1",
        ),
        (
            lambda m: m.update(early_stop_test_accuracy="high"),
            "has early_stop_test_accuracy 'high'; expected a number from 0 to 1",
        ),
        (
            lambda m: m.update(percent_remaining=64.0),
            "has percent_remaining 64.0; expected 100 times its density 0.8",
        ),
        (lambda m: m.update(diverged="no"), "has diverged 'no'; expected true or false"),
        (
            lambda m: m["evaluations"][1].update(val_loss=None),
            "has val_loss None at iteration 200; expected a number",
        ),
        (lambda m: m.update(level=2), "is the metrics of level 2, found in level_1"),
        (lambda m: m.update(branch="reinit"), "is the metrics of branch 'reinit', found in main"),
    ],
)
def test_metrics_that_lack_or_contradict_a_number_say_which(change, problem):
    metrics = fabricated_metrics("main", 1, seed=0)
    assert metrics_problem(metrics, LEVEL) is None
    change(metrics)
    assert metrics_problem(metrics, LEVEL) == problem


def test_non_finite_losses_need_a_level_recorded_as_diverged():
    metrics = fabricated_metrics("main", 1, seed=0)
    metrics["evaluations"][1]["val_loss"] = math.nan
    metrics["diverged"] = False
    assert metrics_problem(metrics, LEVEL) == (
        "holds NaN or infinite losses but does not say it diverged"
    )
    metrics.update(
        diverged=True, divergence={"iteration": 200, "cause": "the training loss became nan"}
    )
    assert metrics_problem(metrics, LEVEL) is None
    assert divergence_of(metrics) == {"iteration": 200, "cause": "the training loss became nan"}


def test_metrics_written_before_divergence_was_recorded_count_as_diverged_by_their_losses():
    metrics = fabricated_metrics("main", 1, seed=0)
    assert divergence_of(metrics) is None
    metrics["evaluations"][1]["train_loss"] = math.inf
    assert metrics_problem(metrics, LEVEL) is None
    assert divergence_of(metrics) == {"iteration": 200, "cause": "a loss became NaN or infinite"}


def test_metrics_must_agree_with_the_masks_they_trained(pruned):
    metrics = fabricated_metrics("main", 1, seed=0)
    metrics.update(density=pruned.density, percent_remaining=100 * pruned.density)
    assert metrics_problem(metrics, masks=pruned) is None
    metrics.update(density=0.64, percent_remaining=64.0)
    assert metrics_problem(metrics, masks=pruned) == (
        "has density 0.64 but its layers keep 80 of 100 weights (0.8)"
    )  # edited by hand
    metrics["layers"][0].update(kept=64)  # consistent in itself: the masks are another level's
    assert metrics_problem(metrics, masks=pruned) == (
        f"records density 0.640000 but the level's masks keep {pruned.density:.6f}: the masks "
        f"are not the ones it trained with"
    )
