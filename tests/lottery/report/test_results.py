import math

import pytest

from sparse_tickets import files
from sparse_tickets.lottery.hparams import Hparams
from sparse_tickets.lottery.presets import PRESETS
from sparse_tickets.lottery.report.results import (
    Spread,
    configuration_labels,
    load_configurations,
    load_runs,
)
from sparse_tickets.lottery.runs import RunError
from tests.lottery.report.fabricate import early_stop_test_accuracy, make_run, wall_time_seconds


def test_runs_that_differ_only_in_seeds_form_one_configuration(tmp_path):
    seeded = [make_run(tmp_path, seed=seed) for seed in (0, 1, 2)]
    other = make_run(tmp_path, seed=0, rewind="iteration", rewind_iteration="100")
    configurations = load_configurations([seeded[0], other, seeded[1], seeded[2]])
    assert [len(c.runs) for c in configurations] == [3, 1]
    assert [run.directory for run in configurations[0].runs] == seeded
    assert [c.label for c in configurations] == [
        "lenet_300_100/mnist5k, rewind init, rewind iteration 0",
        "lenet_300_100/mnist5k, rewind iteration, rewind iteration 100",
    ]
    assert "model_seed" not in configurations[0].hparams


def test_statistics_are_over_the_seeds_that_finished_a_level(tmp_path):
    runs = [
        make_run(tmp_path, seed=0),
        make_run(tmp_path, seed=1),
        make_run(tmp_path, seed=2, main_levels=(0, 1), control_levels=(1,)),
    ]
    (configuration,) = load_configurations(runs)
    assert list(configuration.summaries) == ["main", "reinit"]
    assert configuration.levels == [0, 1, 2, 3]
    assert list(configuration.summaries["reinit"]) == [1, 2, 3]
    main = configuration.summaries["main"]
    assert [main[level].n_seeds for level in (0, 1, 2, 3)] == [3, 3, 2, 2]

    # Level 1 of main: accuracies 0.910, 0.912, 0.914 -> mean 0.912, sample std 0.002.
    level_1 = main[1].early_stop_test_accuracy
    assert level_1.mean == pytest.approx(0.912)
    assert level_1.std == pytest.approx(0.002)
    assert (level_1.minimum, level_1.maximum) == (
        early_stop_test_accuracy("main", 1, 0),
        early_stop_test_accuracy("main", 1, 2),
    )
    # Level 2 of main, seeds 0 and 1 only: 0.920 and 0.922 -> std 0.002 / sqrt(2).
    assert main[2].early_stop_test_accuracy.std == pytest.approx(0.002 / math.sqrt(2))
    assert main[2].wall_time_seconds.mean == pytest.approx(
        (wall_time_seconds("main", 2, 0) + wall_time_seconds("main", 2, 1)) / 2
    )
    assert main[3].percent_remaining == pytest.approx(51.2)


def test_a_single_seed_has_no_standard_deviation():
    spread = Spread.of([0.5])
    assert (spread.mean, spread.std, spread.minimum, spread.maximum) == (0.5, None, 0.5, 0.5)


def test_labels_name_only_what_differs_within_a_model_and_dataset():
    lenet = Hparams().as_dict()
    rewound = Hparams(rewind="lr").as_dict()
    conv = PRESETS["conv2/cifar10"].as_dict()
    assert configuration_labels([lenet, conv, rewound]) == [
        "lenet_300_100/mnist5k, rewind init",
        "conv2/cifar10",
        "lenet_300_100/mnist5k, rewind lr",
    ]


def test_a_directory_named_twice_counts_once(tmp_path):
    run = make_run(tmp_path)
    assert len(load_runs([run, tmp_path / "." / run.name])) == 1


def test_a_corrupted_metrics_file_counts_as_an_unfinished_level(tmp_path):
    run = make_run(tmp_path)
    (run / "main" / "level_3" / "metrics.json").write_text("{}")  # the digest no longer holds
    (configuration,) = load_configurations([run])
    assert list(configuration.summaries["main"]) == [0, 1, 2]


def test_no_directories_is_an_error():
    with pytest.raises(ValueError, match="no run directories given"):
        load_runs([])


def test_a_single_path_instead_of_a_list_is_an_error(tmp_path):
    with pytest.raises(TypeError, match="expected a list of run directories"):
        load_runs(str(make_run(tmp_path)))


def test_a_directory_that_is_not_a_run_is_an_error(tmp_path):
    with pytest.raises(RunError, match="no valid hparams.json"):
        load_runs([tmp_path])
    with pytest.raises(RunError, match="does not exist"):
        load_runs([tmp_path / "missing"])


def test_a_run_with_no_finished_level_is_an_error(tmp_path):
    run = make_run(tmp_path, main_levels=(), control_levels=())
    (run / "main" / "level_0").mkdir(parents=True)  # started, never finished
    with pytest.raises(RunError, match="no finished level in any branch"):
        load_runs([run])


def test_two_directories_with_the_same_seeds_are_an_error(tmp_path):
    first = make_run(tmp_path / "a")
    second = make_run(tmp_path / "b")
    with pytest.raises(RunError, match="same hyperparameters and seeds"):
        load_runs([first, second])


def test_metrics_without_a_reported_number_are_an_error(tmp_path):
    run = make_run(tmp_path)
    path = run / "reinit" / "level_2" / "metrics.json"
    metrics = files.read_json(path)
    del metrics["wall_time_seconds"]
    metrics["early_stop_test_accuracy"] = None
    files.write_json(path, metrics)
    with pytest.raises(
        RunError,
        match=r"lacks the number\(s\) early_stop_test_accuracy, "
        r"wall_time_seconds",
    ):
        load_runs([run])
