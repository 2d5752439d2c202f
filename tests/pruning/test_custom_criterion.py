"""A criterion of one's own, in this one file: a class, a registry entry, and it runs everywhere
the built-in ones do (``prune``, ``prune_at_init``, the hyperparameters, a real IMP run)."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from sparse_tickets import data, files
from sparse_tickets.lottery.hparams import Hparams, validate
from sparse_tickets.lottery.imp import LotteryRun, build_model
from sparse_tickets.progress import LogLines
from sparse_tickets.pruning import (
    AT_INIT_METHODS,
    STRATEGIES,
    Criterion,
    Masks,
    ScoringContext,
    prune,
    prune_at_init,
    register_criterion,
    unregister_criterion,
    weights_of,
)
from tests.pruning.helpers import half_up, small_model


class LayerScaledMagnitude(Criterion):
    """``|w|`` times a fixed factor per layer: a criterion of the weights alone."""

    name = "toy_scaled"
    factors = {"hidden.3.weight": 1e6, "fc2.weight": 1e6}  # these layers are pruned last

    def scores(self, context: ScoringContext) -> dict:
        return {
            name: weight.abs() * self.factors.get(name, 1.0)
            for name, weight in context.weights.items()
        }


class GradientMagnitude(Criterion):
    """``|∂L/∂w|`` summed over the batches: a criterion that needs the model and data."""

    name = "toy_gradient"
    at_initialisation = True
    needs_batches = True
    seen = []  # the batches of each call, for the test to score them again

    def scores(self, context: ScoringContext) -> dict:
        batches = list(context.batches)
        self.seen.append(batches)
        model = copy.deepcopy(context.model)  # never touch the model itself
        loss = sum(F.cross_entropy(model(inputs), targets) for inputs, targets in batches)
        loss.backward()
        parameters = dict(model.named_parameters())
        return {name: parameters[name].grad.abs() for name in context.weights}


@pytest.fixture(autouse=True)
def registered():
    for criterion in (LayerScaledMagnitude, GradientMagnitude):
        register_criterion(criterion)
    GradientMagnitude.seen.clear()
    yield
    for criterion in (LayerScaledMagnitude, GradientMagnitude):
        unregister_criterion(criterion.name)


def test_registration_files_each_criterion_under_its_kind():
    assert list(STRATEGIES)[-1] == "toy_scaled" and "toy_scaled" not in AT_INIT_METHODS
    assert list(AT_INIT_METHODS)[-1] == "toy_gradient" and "toy_gradient" not in STRATEGIES
    validate(Hparams(strategy="toy_scaled"))
    validate(Hparams(strategy="toy_gradient", one_shot_density=0.5))


def test_prune_ranks_by_the_criterions_scores():
    model = small_model()
    masks = prune(
        weights_of(model), Masks.ones_like(model), 0.5, strategy="toy_scaled", scope="global"
    )
    assert bool(masks["fc2.weight"].all())  # its scores are a million times the others'
    pooled = ["features.0.weight", "fc1.weight"]
    removed = sum(int((~masks[name]).sum()) for name in pooled)
    assert removed == half_up("0.5", masks.numel)
    weights = weights_of(model)
    gone = torch.cat([weights[name][~masks[name]].abs() for name in pooled])
    kept = torch.cat([weights[name][masks[name]].abs() for name in pooled])
    assert gone.max() <= kept.min()


def synthetic_batches(count=2):
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(8, 1, 6, 6, generator=generator), torch.randint(5, (8,), generator=generator))
        for _ in range(count)
    ]


def test_prune_at_init_hands_the_criterion_the_model_and_batches():
    model = small_model()
    batches = synthetic_batches()
    masks = prune_at_init(
        model, Masks.ones_like(model), 0.3, method="toy_gradient", batches=batches
    )
    assert [len(seen) for seen in GradientMagnitude.seen] == [2]
    # The same scores in plain torch: the highest 30% of them, pooled, are kept.
    loss = sum(F.cross_entropy(model(inputs), targets) for inputs, targets in batches)
    loss.backward()
    parameters = dict(model.named_parameters())
    scores = {name: parameters[name].grad.abs() for name in masks}
    assert masks.num_unpruned == half_up("0.3", masks.numel)
    kept = torch.cat([scores[name][masks[name]] for name in masks])
    gone = torch.cat([scores[name][~masks[name]] for name in masks])
    assert gone.max() <= kept.min()


SPLITS = data.synthetic(
    input_shape=(1, 28, 28), num_classes=10, train_size=120, val_size=40, test_size=40
)


def lottery_run(tmp_path, **hparams) -> LotteryRun:
    hp = Hparams(
        dataset="synthetic",
        train_size=120,
        iterations="3",
        eval_every=3,
        batch_size=20,
        controls="none",
        **hparams,
    )
    run = LotteryRun(
        hp,
        tmp_path,
        SPLITS,
        torch.device("cpu"),
        checkpoint_every=100,
        progress=LogLines(io.StringIO()),
    )
    assert run.execute()
    return run


def level_masks(run: LotteryRun, level: int) -> Masks:
    return Masks(files.read_tensors(run.run.level("main", level).masks))


def test_an_imp_run_prunes_each_level_by_a_criterion_of_the_weights(tmp_path):
    run = lottery_run(tmp_path, strategy="toy_scaled", levels=1, scope="global")
    masks = level_masks(run, 1)
    # The pooled hidden layers lose 20% together, all of it from hidden.1 (hidden.3 scores a
    # million times higher); the output layer loses 10% on its own.
    assert bool(masks["hidden.3.weight"].all())
    pooled = masks["hidden.1.weight"].numel() + masks["hidden.3.weight"].numel()
    assert int((~masks["hidden.1.weight"]).sum()) == half_up("0.2", pooled)
    assert int((~masks["output.weight"]).sum()) == half_up("0.1", 1000)
    trained = files.read_tensors(run.run.level("main", 0).trained)
    weight = trained["hidden.1.weight"]
    hidden = masks["hidden.1.weight"]
    assert weight[~hidden].abs().max() <= weight[hidden].abs().min()


def test_an_imp_run_prunes_at_initialisation_by_a_criterion_of_the_data(tmp_path):
    run = lottery_run(tmp_path, strategy="toy_gradient", one_shot_density=0.25, score_batches=2)
    (batches,) = GradientMagnitude.seen
    assert [tuple(inputs.shape) for inputs, _ in batches] == [(20, 1, 28, 28)] * 2
    # Level 1 starts from the initialisation (rewind init): the masks are those of the
    # criterion scored there, on the batches the run handed it.
    model = build_model(run.hp, SPLITS, run.hp.model_seed, torch.device("cpu"))
    expected = prune_at_init(
        model,
        Masks.ones_like(model),
        0.25,
        method="toy_gradient",
        batches=batches,
        scope="layerwise",
        exclude=[],
    )
    assert level_masks(run, 1) == expected
