"""Diverged levels in a report: kept out of every statistic and plot, flagged in the table,
counted in summary.csv and listed with where and why."""

import csv
import io
import math

import pytest

from sparse_tickets import files
from sparse_tickets.cli import main
from sparse_tickets.lottery.report import write_report
from sparse_tickets.lottery.report.results import load_configurations
from sparse_tickets.lottery.report.tables import markdown_report, summary_csv
from tests.lottery.report.fabricate import early_stop_test_accuracy, make_run, metrics


def _diverge(run_directory, branch: str, level: int, seed: int) -> None:
    """Rewrite a fabricated level's metrics as those of a level that diverged at 300."""
    values = metrics(branch, level, seed)
    values["evaluations"].append(
        {
            "iteration": 300,
            "train_loss": math.nan,
            "val_loss": math.nan,
            "val_accuracy": 0.1,
            "test_loss": math.nan,
            "test_accuracy": 0.1,
        }
    )
    values.update(
        diverged=True, divergence={"iteration": 300, "cause": "the training loss became nan"}
    )
    files.write_json(run_directory / branch / f"level_{level}" / "metrics.json", values)


@pytest.fixture
def two_seeds(tmp_path):
    """Two seeds of one configuration: seed 0's main level 3 diverged, every reinit level 3
    too."""
    runs = [make_run(tmp_path, seed=seed) for seed in (0, 1)]
    _diverge(runs[0], "main", 3, seed=0)
    for seed, run in enumerate(runs):
        _diverge(run, "reinit", 3, seed=seed)
    return runs


def test_a_diverged_level_is_in_no_statistic(two_seeds):
    (configuration,) = load_configurations(two_seeds)
    main_3 = configuration.summaries["main"][3]
    assert main_3.n_seeds == 1
    assert main_3.early_stop_test_accuracy.mean == early_stop_test_accuracy("main", 3, seed=1)
    assert 3 not in configuration.summaries["reinit"]
    assert [(d.branch, d.level, d.iteration) for d in configuration.diverged] == [
        ("main", 3, 300),
        ("reinit", 3, 300),
        ("reinit", 3, 300),
    ]


def test_summary_csv_counts_the_diverged_seeds(two_seeds):
    rows = {
        (row["branch"], row["level"]): row
        for row in csv.DictReader(io.StringIO(summary_csv(load_configurations(two_seeds))))
    }
    assert rows[("main", "3")]["n_diverged"] == "1" and rows[("main", "3")]["n_seeds"] == "1"
    assert rows[("main", "2")]["n_diverged"] == "0"
    everything_diverged = rows[("reinit", "3")]
    assert everything_diverged["n_diverged"] == "2" and everything_diverged["n_seeds"] == "0"
    assert everything_diverged["early_stop_test_accuracy_mean"] == ""


def test_the_markdown_flags_and_lists_the_diverged_levels(two_seeds):
    text = markdown_report(load_configurations(two_seeds))
    (row,) = [line for line in text.splitlines() if line.startswith("| 3 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == f"{100 * early_stop_test_accuracy('main', 3, 1):.2f} (n=1), 1 diverged"
    assert cells[6:10] == ["diverged (n=2)", "—", "—", "—"]
    assert "## Diverged levels" in text
    assert f"| `{two_seeds[0]}` | ticket | 3 | 51.20 | 300 | the training loss became nan |" in text


def test_the_report_command_writes_the_report_and_notes_each_diverged_level(
    two_seeds, tmp_path, capsys
):
    output = tmp_path / "report"
    assert main(["report", *map(str, two_seeds), "--output", str(output)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "diverged" in line]
    assert notes[0] == (
        f"sparse-tickets: note: main level 3 of {two_seeds[0]} diverged at "
        f"iteration 300 (the training loss became nan); it is listed apart in "
        f"report.md"
    )
    assert len(notes) == 3
    assert "## Diverged levels" in (output / "report.md").read_text()


def test_a_report_cleans_up_what_a_killed_report_left(tmp_path):
    output = tmp_path / "report"
    output.mkdir()
    leftover = output / ".report.md.4242.0badf00d.tmp"
    leftover.write_text("# Lottery-ticket rep")
    write_report([make_run(tmp_path / "runs")], output)
    assert not leftover.exists()
