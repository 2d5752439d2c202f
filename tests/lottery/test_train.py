import torch

from sparse_tickets.lottery.hparams import Hparams
from sparse_tickets.lottery.train import DataOrder, Schedule, summarize


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
    rows = [dict(iteration=i, val_loss=v, val_accuracy=a, test_accuracy=a, test_loss=v,
                 train_loss=None)
            for i, v, a in ((0, 2.0, 0.1), (10, 0.5, 0.8), (20, 0.5, 0.9), (30, 0.7, 0.85))]
    summary = summarize(rows)
    assert summary["early_stop_iteration"] == 10
    assert summary["early_stop_test_accuracy"] == 0.8
    assert summary["final_test_accuracy"] == 0.85
