"""Trials trained stacked in one process: the same runs as separate ones (within the drift of
summing in another order), resumable stacked or alone, a diverging trial stopped alone, and
process levels mixed in through ``--until-level``."""

import dataclasses
from pathlib import Path

import pytest
import torch

from sparse_tickets import files, models
from sparse_tickets.cli import main
from sparse_tickets.compact.choice import default_mode_set_to
from sparse_tickets.lottery import stacked
from sparse_tickets.lottery.datasets import load_splits
from sparse_tickets.lottery.hparams import Hparams
from sparse_tickets.lottery.imp import LotteryRun
from sparse_tickets.lottery.runs import MAIN, Run
from sparse_tickets.lottery.stacked_trials import Costs, StackedTrials, TrialLines
from sparse_tickets.lottery.trials import Outcome, Trial, offset_seeds
from sparse_tickets.nn import masked_layers
from sparse_tickets.progress import LogLines
from tests.drift import assert_same_training, assert_weights_close

HP = Hparams().replace(iterations="24", levels=2, eval_every=8, train_size=240, controls="reinit")
OFFSETS = (0, 1, 2)
CHECKPOINT_EVERY = 8
HORIZON = 24  # iterations per level: the most steps behind any number of these runs
BRANCH_LEVELS = {("main", 0), ("main", 1), ("main", 2), ("reinit", 1), ("reinit", 2)}


@pytest.fixture(scope="module")
def splits():
    return load_splits(HP, None)


@pytest.fixture(autouse=True)
def compact_layers():
    # The stacked layers run compact: separate runs in compact mode sum in the closest order.
    with default_mode_set_to("compact"):
        yield


def lottery_runs(runs: Path, splits, **options) -> list:
    return [
        LotteryRun(
            offset_seeds(HP, offset),
            runs,
            splits,
            torch.device("cpu"),
            CHECKPOINT_EVERY,
            TrialLines(offset),
            **options,
        )
        for offset in OFFSETS
    ]


def trial_argv(offset: int, runs: Path) -> list:
    hp = offset_seeds(HP, offset)
    return [
        "imp",
        *("--iterations", "24", "--levels", "2", "--eval-every", "8", "--train-size", "240"),
        *("--controls", "reinit", "--model-seed", str(hp.model_seed)),
        *("--data-seed", str(hp.data_seed), "--control-seed", str(hp.control_seed)),
        *("--runs-dir", str(runs), "--checkpoint-every", str(CHECKPOINT_EVERY)),
        *("--mode", "compact", "--quiet", "--no-report"),
    ]


def always_stacked(label: str, density: float) -> Costs:
    return Costs(density, stacked=0.0, processes=1.0)


def driver(runs: Path, splits, costs, **options) -> StackedTrials:
    made = lottery_runs(runs, splits)
    trials = [
        Trial(offset, run.run.directory, tuple(trial_argv(offset, runs)))
        for offset, run in zip(OFFSETS, made)
    ]
    return StackedTrials(
        trials,
        made,
        LogLines(),
        parallel=2,
        threads=1,
        startup_seconds=0.0,
        until_level_argv=lambda trial, level: [*trial.argv, "--until-level", str(level)],
        costs=costs,
        **options,
    )


def in_process(trials) -> list:
    """The trials' commands run in this process, one after the other: what their processes
    would do (the processes themselves are tested in tests/lottery/test_trials.py)."""
    return [Outcome(trial, main(list(trial.argv)), 0.0) for trial in trials]


def results(runs: Path) -> dict:
    """(offset, branch, level) -> (metrics without wall time, masks, trained weights)."""
    found = {}
    for offset in OFFSETS:
        run = Run(runs / offset_seeds(HP, offset).run_name())
        for branch in ("main", "reinit"):
            for level, metrics in run.finished_levels(branch).items():
                metrics.pop("wall_time_seconds")
                metrics.pop("stacked_with", None)
                level_files = run.level(branch, level)
                found[(offset, branch, level)] = (
                    metrics,
                    files.read_tensors(level_files.masks),
                    files.read_tensors(level_files.trained),
                )
    return found


def assert_same_runs(got_runs: Path, expected_runs: Path) -> None:
    got, expected = results(got_runs), results(expected_runs)
    assert got.keys() == expected.keys()
    assert {key[1:] for key in expected} == BRANCH_LEVELS
    for key in expected:
        got_metrics, got_masks, got_weights = got[key]
        want_metrics, want_masks, want_weights = expected[key]
        assert all(torch.equal(got_masks[n], want_masks[n]) for n in want_masks), key
        assert_same_training(got_metrics, want_metrics, str(key), HORIZON)
        for name in want_weights:
            assert_weights_close(
                got_weights[name], want_weights[name], f"{key} {name}", lr=HP.lr, steps=HORIZON
            )


@pytest.fixture(scope="module")
def separate(tmp_path_factory, splits) -> Path:
    """The three trials, each run alone in this process."""
    runs = tmp_path_factory.mktemp("separate")
    with default_mode_set_to("compact"):
        for run in lottery_runs(runs, splits):
            assert run.execute()
    return runs


@pytest.fixture(scope="module")
def stacked_runs(tmp_path_factory, splits) -> Path:
    runs = tmp_path_factory.mktemp("stacked")
    with default_mode_set_to("compact"):
        outcomes = driver(runs, splits, always_stacked).execute()
    assert [outcome.returncode for outcome in outcomes] == [0, 0, 0]
    return runs


def test_stacked_trials_are_the_separate_runs(stacked_runs, separate):
    assert_same_runs(stacked_runs, separate)
    metrics = Run(stacked_runs / HP.run_name()).level(MAIN, 2).read_metrics()
    assert metrics["stacked_with"] == 3


def test_a_finished_stacked_run_is_complete_for_the_ordinary_command(stacked_runs, splits):
    for run in lottery_runs(stacked_runs, splits):
        assert not run.execute()  # nothing left to do


class StopAt(LogLines):
    """Progress that interrupts training at an iteration, as Ctrl-C would."""

    def __init__(self, iteration: int):
        super().__init__()
        self.iteration = iteration

    def update(self, iteration, evaluation):
        if iteration == self.iteration:
            raise KeyboardInterrupt


def test_an_interrupted_stacked_level_resumes_stacked_or_alone(tmp_path, splits, separate):
    runs = tmp_path / "runs"
    interrupted = driver(runs, splits, always_stacked)
    interrupted.progress = StopAt(20)  # level 0, after the checkpoint at 16
    with pytest.raises(KeyboardInterrupt):
        interrupted.execute()
    checkpoints = [
        Run(runs / offset_seeds(HP, o).run_name()).level(MAIN, 0).directory / "checkpoint.pt"
        for o in OFFSETS
    ]
    assert all(path.is_file() for path in checkpoints)
    assert files.read_torch(checkpoints[1])["iteration"] == 16
    # Trial +2 loses its checkpoint (a kill between the writes): it starts the level again,
    # stacked apart from trial +1, which resumes at 16. Trial +0 resumes alone.
    files.remove_artifact(checkpoints[2])
    first = lottery_runs(runs, splits)[0]
    assert first.execute()
    assert driver(runs, splits, always_stacked).execute()[1].returncode == 0
    assert_same_runs(runs, separate)


def assert_level_0_as_alone(metrics: dict, separate: Path, offset: int) -> None:
    """Trial ``offset``'s level 0 ``metrics`` are those of its separate run, within the drift."""
    got = dict(metrics)
    want = Run(separate / offset_seeds(HP, offset).run_name()).level(MAIN, 0).read_metrics()
    for found in (got, want):
        found.pop("wall_time_seconds")
        found.pop("stacked_with", None)
    assert_same_training(got, want, f"trial {offset}", HORIZON)


def test_a_diverging_trial_stops_alone(tmp_path, splits, separate):
    runs = tmp_path / "runs"
    made = lottery_runs(runs, splits)
    pending = [run.pending_main_level(0) for run in made]
    # Trial +1 starts from weights so large that its loss is not finite.
    blown = {
        name: tensor * 1e30 if name.endswith("weight") else tensor
        for name, tensor in pending[1].start_state.items()
    }
    pending[1] = dataclasses.replace(pending[1], start_state=blown)
    outcomes = stacked.train_level(list(zip(made, pending)), LogLines())
    assert outcomes[1].diverged is not None and outcomes[1].metrics is None
    assert "diverged at iteration 0" in str(outcomes[1].diverged)
    for offset in (0, 2):
        assert outcomes[offset].diverged is None
        assert_level_0_as_alone(outcomes[offset].metrics, separate, offset)


def test_a_trial_diverging_mid_level_stops_alone(tmp_path, splits, separate, monkeypatch):
    """Trial +1's weights made NaN after step 10: found at the check of iteration 16 (the
    others' weights stay finite: the stacked blocks do not mix), it stops there and the
    others, stacked again without it, end as their separate runs."""
    made = lottery_runs(tmp_path / "runs", splits)
    for run in made:  # no checkpoint to bring the trials' own models up to date meanwhile
        run.checkpoint_every = 1000
    pending = [run.pending_main_level(0) for run in made]
    step = stacked._Group._step

    def poisoned_step(group):
        step(group)
        if group.iteration == 10:
            _, layer = next(iter(masked_layers(group.network)))
            rows = layer.out_features // len(group.members)
            layer.bias.data[rows : 2 * rows] = float("nan")

    monkeypatch.setattr(stacked._Group, "_step", poisoned_step)
    outcomes = stacked.train_level(list(zip(made, pending)), LogLines())
    assert outcomes[1].metrics is None and "diverged at iteration 16" in str(outcomes[1].diverged)
    for offset in (0, 2):
        assert_level_0_as_alone(outcomes[offset].metrics, separate, offset)


def test_until_level_stops_the_main_branch_there(tmp_path, splits, separate):
    (run, *_) = lottery_runs(tmp_path, splits, until_level=0)
    assert run.execute()
    assert set(run.run.finished_levels(MAIN)) == {0}
    assert not run.run.finished_levels("reinit")
    (rest, *_) = lottery_runs(tmp_path, splits)
    assert rest.execute()
    assert set(rest.run.finished_levels(MAIN)) == {0, 1, 2}


def test_levels_chosen_as_processes_run_until_that_level(tmp_path, splits, separate):
    """Stacking pays from level 1 on: level 0 as the trials' own processes (stopped after
    it), found by measuring the last level and then the middle one; the rest stacked."""
    runs = tmp_path / "runs"
    runs.mkdir()
    asked = []

    def costs(label: str, density: float) -> Costs:
        asked.append(label)
        return Costs(density, stacked=2.0 if label == "level 0" else 0.5, processes=1.0)

    started = []

    def processes(trials):
        started.append([trial.argv[-2:] for trial in trials])
        return in_process(trials)

    outcomes = driver(runs, splits, costs, run_processes=processes).execute()
    assert [outcome.returncode for outcome in outcomes] == [0, 0, 0], [
        outcome.last_line() for outcome in outcomes
    ]
    assert asked == ["level 0", "level 2", "level 1"]  # the controls' levels are sparser
    assert started == [[("--until-level", "0")] * 3]
    assert_same_runs(runs, separate)


def test_a_start_up_dearer_than_stacking_the_dense_levels_stacks_them_too(tmp_path, splits):
    """Level 0 loses 0.5 s an iteration stacked, 12 s over its 24 iterations: less than the
    trials' processes would take to start (2 waves of 10 s), so it is stacked too."""
    runs = tmp_path / "runs"
    runs.mkdir()
    costs = lambda label, density: Costs(  # noqa: E731
        density, stacked=1.5 if density == 1.0 else 0.5, processes=1.0
    )
    trials = driver(runs, splits, costs, run_processes=None)
    trials.startup_seconds = 10.0
    trials.run_processes = lambda chosen: pytest.fail(f"processes started: {chosen}")
    assert [outcome.returncode for outcome in trials.execute()] == [0, 0, 0]


def test_stacking_that_never_pays_runs_the_trials_as_processes(tmp_path, splits):
    runs = tmp_path / "runs"
    runs.mkdir()
    started = []

    def processes(trials):
        started.append([trial.offset for trial in trials])
        return [Outcome(trial, 0, 0.0) for trial in trials]

    never = lambda label, density: Costs(density, stacked=2.0, processes=1.0)  # noqa: E731
    driver(runs, splits, never, run_processes=processes).execute()
    assert started == [list(OFFSETS)]  # once, every trial, nothing trained here
    assert not any(
        Run(runs / offset_seeds(HP, o).run_name()).finished_levels(MAIN) for o in OFFSETS
    )


def test_dense_control_levels_go_to_processes_when_their_start_up_pays(tmp_path, splits):
    """Stacking pays below 70% density: level 2 (64%) and its control stacked; the main
    levels 0 and 1 (80%) as processes, then the reinit control of level 1 too, since stacking
    it would cost more than their start-up."""
    runs = tmp_path / "runs"
    runs.mkdir()
    started = []

    def processes(trials):
        started.append([trial.argv[-2:] for trial in trials])
        return in_process(trials)

    def costs(label: str, density: float) -> Costs:
        return Costs(density, stacked=0.0 if density < 0.7 else 3.0, processes=1.0)

    trials = driver(runs, splits, costs, run_processes=processes)
    trials.startup_seconds = 1.0
    assert [outcome.returncode for outcome in trials.execute()] == [0, 0, 0]
    assert started == [[("--until-level", "1")] * 3, [("--quiet", "--no-report")] * 3]
    stacked_levels = {("main", 2), ("reinit", 2)}
    for offset in OFFSETS:
        run = Run(runs / offset_seeds(HP, offset).run_name())
        for branch, level in BRANCH_LEVELS:
            metrics = run.level(branch, level).read_metrics()
            assert ("stacked_with" in metrics) == ((branch, level) in stacked_levels)


def test_stacking_must_win_by_the_margin():
    assert not Costs(0.5, stacked=0.95, processes=1.0).stacking_pays  # within the doubt
    assert Costs(0.5, stacked=0.8, processes=1.0).stacking_pays
    assert Costs(0.5, stacked=0.8, processes=1.0).extra == pytest.approx(0.8 - 0.9)


def test_a_stacked_batch_is_the_replicates_batches_side_by_side(splits):
    indices = [torch.tensor([5, 0, 7]), torch.tensor([1, 2, 3]), torch.tensor([9, 9, 4])]
    x, y = stacked.stacked_batch([splits.train] * 3, indices)
    assert x.shape == (3, 3, 28, 28) and y.shape == (3, 3)
    for r, chosen in enumerate(indices):
        want_x, want_y = splits.train.batch(chosen)
        assert torch.equal(x[:, r : r + 1], want_x) and torch.equal(y[:, r], want_y)
    # Replicates with splits of their own: one gather each, the same layout.
    x, y = stacked.stacked_batch([splits.train, splits.train.subset(torch.arange(10))], indices[:2])
    assert torch.equal(x[:, 1:2], splits.train.batch(indices[1])[0])
    assert torch.equal(y[:, 0], splits.train.batch(indices[0])[1])


def test_measure_times_both_forms_and_leaves_the_threads(splits):
    threads = torch.get_num_threads()
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(models.create("lenet_300_100"))
    times = stacked.measure(nets, splits, 60, HP, 1, steps=2, rounds=1)
    assert all(0 < seconds < 10 for seconds in dataclasses.astuple(times))
    assert torch.get_num_threads() == threads
