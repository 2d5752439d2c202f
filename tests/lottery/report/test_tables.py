import csv
import io
import statistics

import pytest

from sparse_tickets.lottery.hparams import Hparams
from sparse_tickets.lottery.report.results import load_configurations
from sparse_tickets.lottery.report.tables import (
    CSV_COLUMNS,
    key_hyperparameters,
    markdown_report,
    summary_csv,
)
from tests.lottery.report.fabricate import (
    early_stop_iteration,
    early_stop_test_accuracy,
    final_test_accuracy,
    make_run,
    wall_time_seconds,
)

SEEDS = (0, 1, 2)


@pytest.fixture
def three_seeds(tmp_path):
    return [make_run(tmp_path, seed=seed) for seed in SEEDS]


def csv_rows(configurations):
    return list(csv.DictReader(io.StringIO(summary_csv(configurations))))


def test_summary_csv_holds_the_statistics_of_the_fabricated_metrics(three_seeds):
    rows = csv_rows(load_configurations(three_seeds))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(row["branch"], row["level"]) for row in rows] == [
        ("main", "0"),
        ("main", "1"),
        ("main", "2"),
        ("main", "3"),
        ("reinit", "1"),
        ("reinit", "2"),
        ("reinit", "3"),
    ]
    for row in rows:
        branch, level = row["branch"], int(row["level"])
        accuracies = [early_stop_test_accuracy(branch, level, seed) for seed in SEEDS]
        assert row["n_seeds"] == "3"
        assert float(row["percent_remaining"]) == pytest.approx(100 * 0.8**level)
        assert float(row["early_stop_test_accuracy_mean"]) == pytest.approx(sum(accuracies) / 3)
        assert float(row["early_stop_test_accuracy_std"]) == pytest.approx(
            statistics.stdev(accuracies)
        )
        assert float(row["early_stop_iteration_mean"]) == pytest.approx(
            sum(early_stop_iteration(branch, level, seed) for seed in SEEDS) / 3
        )
        assert float(row["final_test_accuracy_mean"]) == pytest.approx(
            sum(final_test_accuracy(branch, level, seed) for seed in SEEDS) / 3
        )
        assert float(row["wall_time_seconds_mean"]) == pytest.approx(
            sum(wall_time_seconds(branch, level, seed) for seed in SEEDS) / 3
        )
    # By hand, for one row: reinit level 2 has 0.840, 0.843, 0.846.
    reinit_2 = rows[5]
    assert float(reinit_2["early_stop_test_accuracy_mean"]) == pytest.approx(0.843)
    assert float(reinit_2["early_stop_test_accuracy_std"]) == pytest.approx(0.003)


def test_summary_csv_leaves_the_std_of_a_single_seed_empty(tmp_path):
    rows = csv_rows(load_configurations([make_run(tmp_path)]))
    assert {row["early_stop_test_accuracy_std"] for row in rows} == {""}
    assert {row["n_seeds"] for row in rows} == {"1"}


def test_the_markdown_table_shows_mean_and_std_as_percentages(three_seeds):
    text = markdown_report(load_configurations(three_seeds))
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    # main level 1: 91.00, 91.20, 91.40 -> 91.20 [91.00, 91.40]; reinit level 1: 86.00 .. 86.60.
    level_1 = rows["| 1"].split(" | ")
    assert level_1[1] == "80.00"
    assert level_1[2:6] == ["91.20 [91.00, 91.40]", "250", "90.70 [90.50, 90.90]", "11.5"]
    assert level_1[6:10] == ["86.30 [86.00, 86.60]", "650", "85.80 [85.50, 86.10]", "11.5"]
    assert level_1[10] == "3 |"
    # The controls did not run at level 0.
    assert rows["| 0"].split(" | ")[6:10] == ["—"] * 4
    assert "`" + str(three_seeds[1]) + "` (1/1/1)" in text


def test_a_branch_with_fewer_seeds_says_how_many(tmp_path):
    runs = [make_run(tmp_path, seed=0), make_run(tmp_path, seed=1, control_levels=(1,))]
    text = markdown_report(load_configurations(runs))
    level_3 = next(line for line in text.splitlines() if line.startswith("| 3 |"))
    assert "(n=1)" in level_3 and level_3.endswith("| 2 |")


def test_two_configurations_get_two_tables(tmp_path, three_seeds):
    other = make_run(tmp_path, rewind="iteration", rewind_iteration="100")
    text = markdown_report(load_configurations([*three_seeds, other]))
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## lenet_300_100/mnist5k, rewind init, rewind iteration 0",
        "## lenet_300_100/mnist5k, rewind iteration, rewind iteration 100",
    ]
    assert sum(line.startswith("| level |") for line in text.splitlines()) == 2


def test_key_hyperparameters_name_the_essentials_and_what_left_its_default():
    hparams = Hparams(rewind="iteration", rewind_iteration="100").as_dict()
    text = key_hyperparameters({k: v for k, v in hparams.items() if not k.endswith("_seed")})
    assert text.startswith("optimizer=adam, lr=0.0012, batch_size=60, iterations=1000")
    assert "rewind=iteration, rewind_iteration=100" in text
    assert "eval_every" not in text and "model=" not in text
