"""`sparse-tickets imp` under torchrun: 2 gloo processes on the CPU give the masks and metrics of
one process with the same global batch; a worker killed mid-level, then the job rerun, ends
where an uninterrupted job ends."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparse_tickets import cli, files
from sparse_tickets.cli import main
from sparse_tickets.lottery.runs import Run
from tests import drift

# A short IMP on the embedded digits: 3 levels of the ticket and the reinit control at level 2,
# the instability analysis of level 2 from iteration 20, checkpoints every 10 iterations so a
# kill lands mid-level.
ARGUMENTS = [
    "imp",
    "--iterations",
    "40",
    "--levels",
    "2",
    "--eval-every",
    "20",
    "--checkpoint-every",
    "10",
    "--train-size",
    "600",
    "--controls",
    "reinit",
    "--control-levels",
    "2",
    "--instability-levels",
    "2",
    "--instability-iterations",
    "20",
    "--instability-points",
    "3",
    "--quiet",
    "--no-report",
]
LEVELS = {
    ("main", 0),
    ("main", 1),
    ("main", 2),
    ("reinit", 2),
    ("instability", "spawn"),
    ("instability", "copy_0"),
    ("instability", "copy_1"),
    ("instability", "path"),
}
TIMEOUT = 180
HORIZON = 40  # iterations per level: the most steps behind any number of these runs
LR = 1.2e-3  # the LeNet preset's


def _torchrun(runs: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--monitor-interval",
        "0.1",
        "-m",
        "sparse_tickets",
        *ARGUMENTS,
        "--runs-dir",
        str(runs),
    ]


def _environment() -> dict:
    # One thread per process: the same floating-point order in every run, and no fight over
    # the cores. The processes find the package from the repository root.
    path = os.pathsep.join(
        filter(None, [str(Path(__file__).parents[3]), os.environ.get("PYTHONPATH")])
    )
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def _results(runs: Path) -> dict:
    """(branch, level) -> (metrics without wall time, masks, trained weights)."""
    (run_directory,) = runs.iterdir()
    run = Run.open(run_directory)
    results = {}
    for branch in ("main", "reinit"):
        for level, metrics in run.finished_levels(branch).items():
            metrics.pop("wall_time_seconds")
            level_files = run.level(branch, level)
            results[(branch, level)] = (
                metrics,
                files.read_tensors(level_files.masks),
                files.read_tensors(level_files.trained),
            )
    where = run.instability("main", 2, 20)
    for name, level_files in (
        ("spawn", where.spawn),
        ("copy_0", where.copy(0)),
        ("copy_1", where.copy(1)),
    ):
        metrics = level_files.read_metrics()
        if metrics is not None:
            metrics.pop("wall_time_seconds")
            results[("instability", name)] = (
                metrics,
                files.read_tensors(level_files.masks),
                files.read_tensors(level_files.trained),
            )
    path = files.read_json(where.path(3))
    if path is not None:
        results[("instability", "path")] = (path, {}, {})
    return results


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """The runs directory of one uninterrupted 2-process job."""
    runs = tmp_path_factory.mktemp("two_processes")
    job = subprocess.run(
        _torchrun(runs), env=_environment(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert job.returncode == 0, job.stderr[-3000:]
    assert "2 processes (gloo), global batch 60, 30 per process" in job.stderr
    return runs


def test_two_processes_equal_one_process_with_the_same_global_batch(
    two_processes, tmp_path, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main([*ARGUMENTS, "--runs-dir", str(tmp_path)]) == 0
    # The same hyperparameters, so the same run directory name.
    assert [p.name for p in tmp_path.iterdir()] == [p.name for p in two_processes.iterdir()]
    got, expected = _results(two_processes), _results(tmp_path)
    assert got.keys() == expected.keys() == LEVELS
    for key in expected:
        (got_metrics, got_masks, got_weights) = got[key]
        (expected_metrics, expected_masks, expected_weights) = expected[key]
        assert all(torch.equal(got_masks[n], expected_masks[n]) for n in expected_masks), key
        # DDP sums the halves' gradients in another order than one process sums the batch.
        drift.assert_same_training(got_metrics, expected_metrics, str(key), HORIZON)
        for name in expected_weights:
            drift.assert_weights_close(
                got_weights[name], expected_weights[name], f"{key} {name}", lr=LR, steps=HORIZON
            )


def _workers(launcher: int) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes (read from /proc)."""
    workers = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environment = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent != launcher:
            continue
        for variable in environment:
            if variable.startswith(b"RANK="):
                workers[int(variable[5:])] = int(entry.name)
    return workers


def test_a_worker_killed_mid_level_then_the_job_rerun_resumes(two_processes, tmp_path):
    launcher = subprocess.Popen(
        _torchrun(tmp_path),
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    try:
        while not list(tmp_path.glob("*/main/level_1/checkpoint.pt.sha256")):
            assert launcher.poll() is None, "the job ended before a worker could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        os.kill(_workers(launcher.pid)[1], signal.SIGKILL)
        _, errors = launcher.communicate(timeout=TIMEOUT)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode != 0, "torchrun did not report the killed worker"
    (run_directory,) = tmp_path.iterdir()
    assert not Run.open(run_directory).level("main", 2).done(), "killed too late to test resume"

    rerun = subprocess.run(
        _torchrun(tmp_path), env=_environment(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    got, expected = _results(tmp_path), _results(two_processes)
    assert got.keys() == expected.keys() == LEVELS
    for key in expected:  # bit-identical to the uninterrupted job
        (got_metrics, got_masks, got_weights), (metrics, masks, weights) = got[key], expected[key]
        assert got_metrics == metrics, key
        assert all(torch.equal(got_masks[n], masks[n]) for n in masks), key
        assert all(torch.equal(got_weights[n], weights[n]) for n in weights), key


def _hparams(argv, monkeypatch, world_size):
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    return cli._hparams(cli._build_parser().parse_args(argv))


def test_the_global_batch_is_the_presets_unless_scaled(monkeypatch):
    assert _hparams(["imp"], monkeypatch, 4).batch_size == 60
    scaled = _hparams(["imp", "--scale-batch"], monkeypatch, 4)
    assert (scaled.batch_size, scaled.lr) == (240, pytest.approx(4 * 1.2e-3))
    alone = _hparams(["imp", "--scale-batch"], monkeypatch, 1)
    assert alone == _hparams(["imp"], monkeypatch, 1)  # one process: nothing to scale
    assert (
        scaled.run_name()
        == _hparams(
            ["imp", "--batch-size", "240", "--lr", str(scaled.lr)], monkeypatch, 1
        ).run_name()
    )


def test_a_batch_that_does_not_divide_by_the_processes_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "7")
    assert main(["imp", "--batch-size", "60"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "batch_size 60 does not divide by the 7 processes of this job" in error
