"""`sparse-tickets instability` and the instability branch of `imp`, end to end."""

import pytest

from sparse_tickets import files
from sparse_tickets.cli import main
from sparse_tickets.lottery.runs import Run
from tests.cli.conftest import SHORT

SMALL = [*SHORT, "--levels", "1", "--controls", "none"]


def _only_run(runs):
    (directory,) = runs.iterdir()
    return Run.open(directory)


def test_imp_runs_the_instability_branch_at_the_levels_asked(tmp_path, capsys):
    runs = tmp_path / "runs"
    arguments = [
        "imp",
        *SMALL,
        "--instability-levels",
        "0,1",
        "--instability-iterations",
        "0",
        "--instability-points",
        "3",
        "--runs-dir",
        str(runs),
    ]
    assert main(arguments) == 0
    run = _only_run(runs)
    for level in (0, 1):
        result = files.read_json(run.instability("main", level, 0).path(3))
        assert result["level"] == level and len(result["test_error"]) == 3
    assert "instability of main level 1 from iteration 0" in capsys.readouterr().err
    report = run.report_directory
    assert (report / "instability.png").is_file() and (report / "instability.csv").is_file()
    assert "## Instability (linear mode connectivity)" in (report / "report.md").read_text()
    assert main(arguments) == 0
    assert "already complete" in capsys.readouterr().err


def test_the_instability_command_analyses_a_finished_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["imp", *SMALL, "--no-report", "--runs-dir", str(runs)]) == 0
    run = _only_run(runs)
    moved = tmp_path / "elsewhere"
    run.directory.rename(moved)  # a run directory keeps working wherever it is moved
    assert (
        main(
            [
                "instability",
                str(moved),
                "--level",
                "1",
                "--iterations",
                "0",
                "20",
                "--points",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    moved_run = Run.open(moved)
    for iteration in (0, 20):
        assert files.read_json(moved_run.instability("main", 1, iteration).path(3)) is not None
    assert moved_run.instability("main", 1, 20).spawn.done()
    assert not moved_run.instability("main", 1, 0).spawn.directory.exists()
    assert (moved / "report" / "instability.png").is_file()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    capsys.readouterr()
    assert (
        main(
            [
                "instability",
                str(moved),
                "--level",
                "1",
                "--iterations",
                "0",
                "20",
                "--points",
                "3",
                "--quiet",
                "--no-report",
            ]
        )
        == 0
    )
    assert "already done" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["imp", *SMALL, "--no-report", "--runs-dir", str(runs)]) == 0
    return _only_run(runs).directory


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--level", "3"], "main level 3 of"),
        (["--level", "1", "--iterations", "60"], "before the end of training at 60"),
        (["--level", "1", "--iterations", "soon"], "expected a count of iterations"),
        (["--level", "1", "--points", "1"], "expected at least 2 points"),
        (["--level", "1", "--branch", "reinit"], "reinit level 1 of"),
    ],
)
def test_instability_mistakes_exit_2_with_one_line(small_run, capsys, arguments, message):
    capsys.readouterr()
    assert main(["instability", str(small_run), *arguments, "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
    assert not (small_run / "instability").exists()  # nothing made before every check passed


def test_imp_refuses_an_instability_iteration_outside_training(tmp_path, capsys):
    assert (
        main(
            [
                "imp",
                *SMALL,
                "--instability-levels",
                "1",
                "--instability-iterations",
                "80",
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert "instability_iterations has 80" in error and "\n" not in error
    assert not any(tmp_path.iterdir())  # nothing made before every check passed
