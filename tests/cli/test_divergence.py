"""A run whose training diverges: recorded as diverged in valid JSON, stopped with one line
naming the level and a remedy (exit status 1, at every rerun), refused by `export` and flagged
by `report`; an exploding but finite loss is warned about."""

import json
import math

import pytest

from sparse_tickets.cli import main
from sparse_tickets.lottery.runs import Run

# SGD at a learning rate of a million: the loss is NaN within the first ten steps.
DIVERGING = [
    "imp",
    "--optimizer",
    "sgd",
    "--lr",
    "1e6",
    "--iterations",
    "20",
    "--eval-every",
    "10",
    "--levels",
    "1",
    "--controls",
    "none",
    "--train-size",
    "300",
    "--quiet",
]
PREFIX = "sparse-tickets: error: "


@pytest.fixture(scope="module")
def diverged(tmp_path_factory):
    """(runs dir, run directory, the error line) of a run whose level 0 diverged."""
    runs = tmp_path_factory.mktemp("runs")
    capture = _Capture()
    with capture:
        status = main([*DIVERGING, "--runs-dir", str(runs)])
    assert status == 1
    (directory,) = runs.iterdir()
    return runs, directory, capture.last_error()


class _Capture:
    """stderr of a command run in this process, for a module-scoped fixture (no capsys)."""

    def __enter__(self):
        import contextlib
        import io

        self.buffer = io.StringIO()
        self._redirect = contextlib.redirect_stderr(self.buffer)
        self._redirect.__enter__()

    def __exit__(self, *exc):
        self._redirect.__exit__(*exc)

    def last_error(self) -> str:
        lines = self.buffer.getvalue().strip().splitlines()
        assert lines[-1].startswith(PREFIX) and not any(
            line.startswith(PREFIX) for line in lines[:-1]
        ), lines
        return lines[-1][len(PREFIX) :]


def _strict_json(text: str):
    def refuse(token):
        raise AssertionError(f"bare {token} in metrics.json is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_the_run_stops_with_one_line_naming_the_level_and_a_remedy(diverged):
    _, directory, line = diverged
    metrics_path = directory / "main" / "level_0" / "metrics.json"
    assert line == (
        f"level 0 diverged at iteration 10: the training loss became nan (recorded "
        f"in {metrics_path}); nothing can be pruned from it or rewound to it, so the "
        f"run stops here: lower --lr (it is 1e+06), or add --warmup, and run again"
    )
    assert not (directory / "main" / "level_1").exists()  # never pruned from, nor rewound to


def test_the_diverged_level_is_recorded_in_valid_json_without_weights(diverged):
    _, directory, _ = diverged
    level = Run.open(directory).level("main", 0)
    stored = _strict_json(level.metrics.read_text())
    assert stored["diverged"] is True
    assert stored["divergence"] == {"cause": "the training loss became nan", "iteration": 10}
    assert stored["evaluations"][-1]["val_loss"] == "NaN"
    metrics = level.read_metrics()
    assert math.isnan(metrics["evaluations"][-1]["val_loss"])
    assert metrics["early_stop_iteration"] == 0  # the last finite evaluation, never the NaN one
    assert math.isfinite(metrics["early_stop_val_loss"])
    assert not level.trained.exists() and not level.checkpoint.exists()


def test_a_rerun_stops_the_same_way_without_training_again(diverged, capsys):
    runs, directory, line = diverged
    before = (directory / "main" / "level_0" / "metrics.json").read_bytes()
    assert main([*DIVERGING, "--runs-dir", str(runs)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == PREFIX + line
    assert (directory / "main" / "level_0" / "metrics.json").read_bytes() == before


def test_export_refuses_a_diverged_level(diverged, capsys, tmp_path):
    _, directory, _ = diverged
    output = tmp_path / "ticket.safetensors"
    assert main(["export", str(directory), "--level", "0", "--output", str(output)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"{PREFIX}main level 0 of {directory} diverged at iteration 10 (the training loss "
        f"became nan): it has no ticket to export; rerun with a lower --lr"
    )
    assert not output.exists()


def test_report_of_a_run_with_nothing_but_a_diverged_level_says_so(diverged, capsys, tmp_path):
    _, directory, _ = diverged
    assert main(["report", str(directory), "--output", str(tmp_path / "report")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"{PREFIX}every finished level diverged (e.g. main level 0 of {directory} at iteration "
        f"10: the training loss became nan); nothing to report: rerun with a lower --lr"
    )


def test_an_exploding_finite_loss_is_warned_about(tmp_path, capsys):
    # Adam at a learning rate of a million: weights near 1e7, a huge loss that stays finite.
    assert (
        main(
            [
                "train",
                "--lr",
                "1e6",
                "--iterations",
                "20",
                "--eval-every",
                "10",
                "--train-size",
                "300",
                "--runs-dir",
                str(tmp_path),
                "--quiet",
                "--no-report",
            ]
        )
        == 0
    )
    warnings = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")
    ]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: level 0: the validation loss ended at ")
    assert warnings[0].endswith(
        "times that of guessing (2.30): training is unstable; consider "
        "a lower --lr (it is 1e+06) or --warmup"
    )
    (directory,) = tmp_path.iterdir()
    assert Run.open(directory).level("main", 0).read_metrics()["warning"] in warnings[0]
