"""A run killed with SIGKILL mid-level, then rerun, ends where an uninterrupted run ends."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from sparse_tickets import files
from sparse_tickets.lottery.runs import Run

# One pruned level and its reinit control: a kill mid-way through a ticket level that follows a
# finished one, and a kill mid-way through a control level; checkpoints every 10 iterations of
# 40, so each kill lands mid-level.
ARGUMENTS = [
    "imp",
    "--iterations",
    "40",
    "--levels",
    "1",
    "--eval-every",
    "20",
    "--checkpoint-every",
    "10",
    "--train-size",
    "600",
    "--controls",
    "reinit",
    "--quiet",
    "--no-report",
]


def _command(runs: Path) -> list[str]:
    return [sys.executable, "-m", "sparse_tickets", *ARGUMENTS, "--runs-dir", str(runs)]


def _environment() -> dict:
    # One thread: the same floating-point order in every process, and no fight over cores.
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _kill_once_checkpointed(runs: Path, checkpoint_glob: str, timeout: float = 120) -> None:
    process = subprocess.Popen(
        _command(runs), env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    try:
        while not list(runs.glob(checkpoint_glob)):
            assert process.poll() is None, "the run ended before it could be killed mid-level"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL


def _results(runs: Path) -> dict:
    (run_directory,) = runs.iterdir()
    run = Run.open(run_directory)
    results = {}
    for branch in ("main", "reinit"):
        for level, metrics in run.finished_levels(branch).items():
            metrics.pop("wall_time_seconds")
            trained = files.read_tensors(run.level(branch, level).trained)
            results[(branch, level)] = (metrics, trained)
    return results


def test_sigkill_mid_level_then_rerun_equals_an_uninterrupted_run(tmp_path):
    interrupted = tmp_path / "interrupted"
    _kill_once_checkpointed(interrupted, "*/main/level_1/checkpoint.pt.sha256")
    _kill_once_checkpointed(interrupted, "*/reinit/level_1/checkpoint.pt.sha256")
    resumed = subprocess.run(
        _command(interrupted), env=_environment(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr

    uninterrupted = tmp_path / "uninterrupted"
    complete = subprocess.run(
        _command(uninterrupted), env=_environment(), capture_output=True, text=True
    )
    assert complete.returncode == 0, complete.stderr

    got, expected = _results(interrupted), _results(uninterrupted)
    assert got.keys() == expected.keys() == {("main", 0), ("main", 1), ("reinit", 1)}
    for key in expected:
        (got_metrics, got_weights), (expected_metrics, expected_weights) = got[key], expected[key]
        assert got_metrics == expected_metrics, key  # bit-identical numbers
        assert all(torch.equal(got_weights[n], expected_weights[n]) for n in expected_weights)
