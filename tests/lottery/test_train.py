import math

import torch

from sparse_tickets import models
from sparse_tickets.lottery.hparams import Hparams
from sparse_tickets.lottery.train import DataOrder, Schedule, divergence, explosion, summarize


def test_schedule_resolves_epochs_and_computes_the_learning_rate():
    hp = Hparams(iterations="4ep", milestones="2ep,3ep", warmup="10", batch_size=10)
    schedule = Schedule.resolve(hp, train_size=105)  # 10 iterations per epoch, last 5 dropped
    assert (schedule.iterations_per_epoch, schedule.iterations) == (10, 40)
    assert schedule.milestones == (20, 30) and schedule.warmup == 10
    rates = [schedule.learning_rate(1.0, 0.1, t) for t in (0, 4, 9, 10, 19, 20, 29, 30, 39)]
    expected = [0.1, 0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    assert all(abs(r - e) < 1e-12 for r, e in zip(rates, expected))


def test_data_order_is_a_function_of_the_iteration():
    order = DataOrder(size=23, batch_size=5, data_seed=3)
    first_epoch = torch.cat([order.indices(t) for t in range(4)])
    assert first_epoch.unique().numel() == 20  # one epoch: no repeats, the last 3 dropped
    again = DataOrder(size=23, batch_size=5, data_seed=3)
    assert torch.equal(again.indices(6), order.indices(6))  # no replay needed to resume
    assert not torch.equal(order.indices(4), order.indices(0))  # each epoch reshuffles
    assert not torch.equal(DataOrder(23, 5, data_seed=4).indices(0), order.indices(0))


def test_summary_takes_the_first_minimum_of_validation_loss():
    rows = [
        dict(iteration=i, val_loss=v, val_accuracy=a, test_accuracy=a, test_loss=v, train_loss=None)
        for i, v, a in ((0, 2.0, 0.1), (10, 0.5, 0.8), (20, 0.5, 0.9), (30, 0.7, 0.85))
    ]
    summary = summarize(rows)
    assert summary["early_stop_iteration"] == 10
    assert summary["early_stop_test_accuracy"] == 0.8
    assert summary["final_test_accuracy"] == 0.85


def _row(iteration, val_loss, accuracy=0.5):
    return dict(
        iteration=iteration,
        val_loss=val_loss,
        val_accuracy=accuracy,
        test_accuracy=accuracy,
        test_loss=val_loss,
        train_loss=None,
    )


def test_a_non_finite_validation_loss_is_never_the_early_stop_point():
    rows = [
        _row(0, 2.3, 0.1),
        _row(10, 0.9, 0.6),
        _row(20, math.nan, 0.1),
        _row(30, -math.inf, 0.1),
    ]
    summary = summarize(rows)
    assert summary["early_stop_iteration"] == 10 and summary["early_stop_val_loss"] == 0.9
    nothing_finite = summarize([_row(0, math.nan)])
    assert nothing_finite["early_stop_iteration"] is None
    assert nothing_finite["final_test_accuracy"] == 0.5


def test_divergence_is_a_non_finite_loss_or_weight():
    model = models.create("lenet_300_100")
    assert divergence(model, _row(10, 0.5), running_loss=12.0) is None
    assert divergence(model, None, running_loss=math.inf) == {
        "cause": "the training loss became inf"
    }
    assert divergence(model, _row(10, math.nan), None) == {
        "cause": "the validation loss became nan"
    }
    with torch.no_grad():
        model.output.bias[3] = math.nan
    assert divergence(model, _row(10, 0.5), 1.0) == {
        "cause": "the weights became non-finite (output.bias)"
    }


def test_an_exploding_but_finite_loss_is_described_and_a_merely_poor_one_is_not():
    metrics = {"diverged": False, "evaluations": [_row(0, 2.3), _row(10, 590630.0)]}
    assert explosion(metrics, num_classes=10) == (
        "the validation loss ended at 5.91e+05, 256507 times that of guessing (2.30)"
    )
    poor = {"diverged": False, "evaluations": [_row(0, 2.3), _row(10, 40.0)]}
    assert explosion(poor, num_classes=10) is None  # overfitting, not an explosion
    assert explosion({**metrics, "diverged": True}, num_classes=10) is None
