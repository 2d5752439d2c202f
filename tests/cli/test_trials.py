"""`--trials`: replicates as ordinary run directories, run together, resumed, reported; a
branch added to a finished run; `runs` listing them."""

import os
import signal
import subprocess
import sys
import time

import pytest

from sparse_tickets.cli import main
from sparse_tickets.lottery.hparams import Hparams
from sparse_tickets.lottery.runs import Run

TINY = [
    "--iterations",
    "12",
    "--levels",
    "1",
    "--eval-every",
    "6",
    "--train-size",
    "240",
    "--controls",
    "none",
    "--quiet",
]
ENVIRONMENT = {**os.environ, "SPARSE_TICKETS_CALIBRATION": "off"}


def _command(*argv) -> list:
    return [sys.executable, "-m", "sparse_tickets", *argv]


def _trial_directories(runs):
    base = Hparams().replace(
        iterations="12", levels=1, eval_every=6, train_size=240, controls="none"
    )
    return [
        runs / base.replace(model_seed=s, data_seed=s, control_seed=1 + s).run_name()
        for s in range(2)
    ]


@pytest.fixture(scope="module")
def trials_run(tmp_path_factory):
    """Two trials, killed once mid-way and resumed: (runs dir, first output, second output)."""
    runs = tmp_path_factory.mktemp("trials")
    argv = _command("imp", "--trials", "2", *TINY, "--runs-dir", str(runs), "--name", "tiny")
    first = subprocess.Popen(
        argv,
        env=ENVIRONMENT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )
    level_0 = [d / "main" / "level_0" / "metrics.json" for d in _trial_directories(runs)]
    deadline = time.monotonic() + 240
    while not any(path.exists() for path in level_0) and first.poll() is None:
        assert time.monotonic() < deadline, "no trial finished a level in 240 s"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # the parent and its trials, as a lost session would
    first_output = first.communicate()[0]
    second = subprocess.run(argv, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    return runs, first_output, second.stdout + second.stderr


def test_trials_are_ordinary_runs_with_offset_seeds_resumed_after_a_kill(trials_run):
    runs, _, output = trials_run
    for offset, directory in enumerate(_trial_directories(runs)):
        run = Run.open(directory)
        assert (run.hparams.model_seed, run.hparams.data_seed) == (offset, offset)
        assert sorted(run.finished_levels("main")) == [0, 1]
        assert run.name == "tiny"
        log = (directory / "trial.log").read_text()
        assert f"--model-seed {offset} --data-seed {offset}" in log
    assert "2 trials, as processes: 2 at a time" in output and "trial +1 done" in output


def test_the_trials_report_has_both_seeds(trials_run):
    runs, _, _ = trials_run
    report = (runs / "report-tiny" / "report.md").read_text()
    assert "| 2 |" in report  # a seeds column of 2 on the levels' rows
    assert (runs / "report-tiny" / "accuracy.png").stat().st_size > 0


def test_runs_lists_the_trials_with_their_state(trials_run, capsys):
    runs, _, _ = trials_run
    assert main(["runs", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["run", "name", "model/dataset", "seeds"]
    rows = [line for line in lines[1:] if line.startswith("lenet_300_100-mnist5k-")]
    assert len(rows) == 2
    for row in rows:
        assert " tiny " in row and " done " in row and "levels 2/2" in row
    assert any(" 1/1/2 " in row for row in rows)


def test_a_control_added_to_a_finished_run_reuses_its_levels(trials_run):
    runs, _, _ = trials_run
    directory = _trial_directories(runs)[0]
    trained = (directory / "main" / "level_1" / "trained.safetensors").stat().st_mtime_ns
    argv = [
        "imp",
        *TINY[:-3],
        "--controls",
        "reinit",
        "--quiet",
        "--no-report",
        "--runs-dir",
        str(runs),
    ]
    assert main(argv) == 0
    run = Run.open(directory)  # the same directory: controls are not in the run's hash
    assert sorted(run.finished_levels("reinit")) == [1]
    assert (directory / "main" / "level_1" / "trained.safetensors").stat().st_mtime_ns == trained
    assert run.hparams.controls == "reinit"


def test_instability_of_each_trial(trials_run, capsys):
    runs, _, _ = trials_run
    first = _trial_directories(runs)[0]
    # Each trial's analysis is a process of its own; the command that starts them runs here.
    assert (
        main(
            [
                "instability",
                str(first),
                "--level",
                "0",
                "--trials",
                "2",
                "--points",
                "3",
                "--iterations",
                "6",
                "--quiet",
            ]
        )
        == 0
    ), capsys.readouterr()
    assert "sparse-tickets: 2 trials, " in capsys.readouterr().out
    for directory in _trial_directories(runs):
        assert Run.open(directory).instability_results()
    assert (runs / f"report-instability-{first.name}" / "instability.png").is_file()


def test_instability_trials_need_the_trials_runs(trials_run, capsys):
    runs, _, _ = trials_run
    first = _trial_directories(runs)[0]
    assert main(["instability", str(first), "--level", "0", "--seeds", "0,7"]) == 2
    assert "no run of trial +7" in capsys.readouterr().err


def test_trials_through_submitit_local_executor(tmp_path):
    # The SLURM submission, run by submitit's local executor: a real job array of two tasks.
    done = subprocess.run(
        _command(
            "imp",
            "--seeds",
            "3,4",
            *TINY,
            "--runs-dir",
            str(tmp_path),
            "--executor",
            "submitit-local",
        ),
        env=ENVIRONMENT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": job ") == 2
    base = Hparams().replace(
        iterations="12", levels=1, eval_every=6, train_size=240, controls="none"
    )
    for seed in (3, 4):
        directory = (
            tmp_path
            / base.replace(model_seed=seed, data_seed=seed, control_seed=1 + seed).run_name()
        )
        assert sorted(Run.open(directory).finished_levels("main")) == [0, 1]
    assert (tmp_path / "slurm").is_dir()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--trials", "2", "--seeds", "0-1"], "expected one of them"),
        (["--seeds", "3-1"], "expected first <= last"),
        (["--seeds", "x"], "expected seed offsets like 0-4"),
        (["--trials", "0"], "expected a positive integer"),
        (["--trials", "2", "--parallel", "0"], "expected a positive integer"),
    ],
)
def test_bad_trial_options_are_refused_in_one_line(argv, message, tmp_path, capsys):
    assert main(["imp", *TINY, *argv, "--runs-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_stacked_executor_trains_the_trials_here(tmp_path, capsys):
    argv = ["imp", "--trials", "2", *TINY, "--runs-dir", str(tmp_path), "--executor", "stacked"]
    assert main([*argv, "--name", "stacked"]) == 0
    output = capsys.readouterr()
    assert "2 trials, stacked where that is faster" in output.out
    assert "level 0 (100.0%): 2 trials stacked" in output.err and "measured: " in output.err
    for directory in _trial_directories(tmp_path):
        run = Run.open(directory)
        assert sorted(run.finished_levels("main")) == [0, 1] and run.name == "stacked"
    assert (tmp_path / "report-stacked" / "report.md").is_file()
    # Run again: nothing is left, and the ordinary executor agrees.
    assert main(argv) == 0
    assert "trials stacked" not in capsys.readouterr().err


def test_instability_has_no_stacked_executor(trials_run, capsys):
    runs, _, _ = trials_run
    first = _trial_directories(runs)[0]
    argv = ["instability", str(first), "--level", "0", "--trials", "2", "--executor", "stacked"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "--executor stacked trains the levels of imp and train" in error
    assert len(error.strip().splitlines()) == 1
