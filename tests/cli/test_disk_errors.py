"""A disk that refuses a write (full, read-only, not ours): one line naming the file and what to
do, exit status 1, and the run directory left as it was, resumable once the cause is gone."""

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparse_tickets import files
from sparse_tickets.cli import main
from sparse_tickets.lottery.runs import Run
from tests.cli.conftest import SHORT

TINY = [
    "imp",
    "--iterations",
    "60",
    "--levels",
    "1",
    "--eval-every",
    "20",
    "--checkpoint-every",
    "25",
    "--train-size",
    "600",
    "--controls",
    "none",
    "--quiet",
    "--no-report",
]
SHORT_RUN = ["imp", *SHORT, "--controls", "reinit,random_pruning"]  # the short_run fixture's


def _results(runs: Path) -> dict:
    (run_directory,) = runs.iterdir()
    run = Run.open(run_directory)
    results = {}
    for level, metrics in run.finished_levels("main").items():
        metrics.pop("wall_time_seconds")
        results[level] = (metrics, files.read_tensors(run.level("main", level).trained))
    return results


def test_a_disk_that_fills_mid_level_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    real_fsync = os.fsync

    def fsync(descriptor):  # the disk fills when level 1 writes its first checkpoint
        if "level_1/.checkpoint.pt" in os.readlink(f"/proc/self/fd/{descriptor}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main([*TINY, "--runs-dir", str(runs)]) == 1
    monkeypatch.undo()
    error = capsys.readouterr().err.strip().splitlines()[-1]
    (run_directory,) = runs.iterdir()
    checkpoint = run_directory / "main" / "level_1" / "checkpoint.pt"
    assert error == (
        f"sparse-tickets: error: cannot write {checkpoint}: No space left on "
        f"device; free some space there (or use another disk), then run the same "
        f"command again (what was written so far is kept)"
    )
    assert not list(run_directory.rglob("*.tmp"))  # nothing half-written left behind
    assert sorted(Run.open(run_directory).finished_levels("main")) == [0]

    assert main([*TINY, "--runs-dir", str(runs)]) == 0  # space freed: it resumes
    uninterrupted = tmp_path / "uninterrupted"
    assert main([*TINY, "--runs-dir", str(uninterrupted)]) == 0
    got, expected = _results(runs), _results(uninterrupted)
    assert sorted(got) == sorted(expected) == [0, 1]
    for level in expected:
        assert got[level][0] == expected[level][0]
        assert all(
            torch.equal(got[level][1][name], tensor) for name, tensor in expected[level][1].items()
        )


# Running commands on a read-only directory. As root, permission bits do not stop writes, so a
# real read-only file system is made instead: a read-only bind mount in a private mount
# namespace (unshare), where the commands run.

_IN_READ_ONLY_MOUNT = """
import contextlib, io, json, subprocess, sys
subprocess.run(["mount", "--bind", "-o", "ro", sys.argv[1], sys.argv[1]], check=True)
from sparse_tickets.cli import main
results = []
for arguments in json.loads(sys.argv[2]):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        results.append([main(arguments), stderr.getvalue()])
print(json.dumps(results))
"""


def _run_on_read_only(mechanism: str, directory: Path, commands: list) -> list:
    """[(exit status, stderr)] of each command, run while ``directory`` is read-only."""
    if mechanism == "read-only mount":
        # No compiled kernels: nothing trains here, and a build in progress elsewhere on the
        # machine would only hold the commands up.
        environment = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")])
            ),
            "SPARSE_TICKETS_CPU_EXTENSION": "skip",
        }
        done = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                sys.executable,
                "-c",
                _IN_READ_ONLY_MOUNT,
                str(directory),
                json.dumps(commands),
            ],
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        return [tuple(result) for result in json.loads(done.stdout.splitlines()[-1])]
    paths = [directory, *directory.rglob("*")]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        results = []
        for arguments in commands:
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                results.append((main(arguments), stderr.getvalue()))
        return results
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)


# The way this user can be refused a write: permission bits, which root ignores; for root, a
# read-only bind mount in a mount namespace of its own (unshare).
MECHANISMS = ["read-only mount" if os.geteuid() == 0 else "chmod"]


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_read_only_run_directory(short_run, tmp_path, mechanism):
    _, source = short_run
    read_only = tmp_path / "read_only"
    complete = read_only / "complete" / source.name
    redo = read_only / "redo" / source.name
    shutil.copytree(source, complete)
    shutil.copytree(source, redo)
    files.remove_artifact(redo / "reinit" / "level_2" / "metrics.json")  # to be redone
    reason = {
        "chmod": "Permission denied; make it writable for this user",
        "read-only mount": "Read-only file system; remount it read-write",
    }[mechanism]
    results = _run_on_read_only(
        mechanism,
        read_only,
        [
            [*SHORT_RUN, "--runs-dir", str(complete.parent), "--no-report"],
            [*SHORT_RUN, "--runs-dir", str(redo.parent), "--no-report"],
            [*SHORT_RUN, "--runs-dir", str(read_only / "fresh"), "--no-report"],
            ["report", str(complete)],
            ["export", str(complete), "--level", "1"],
        ],
    )
    finished, needs_a_level, fresh, report, export = results
    assert finished[0] == 0 and "is already complete; nothing to do" in finished[1]
    for (status, stderr), path, action in (
        (needs_a_level, redo / "reinit" / "level_2" / "start.safetensors", "write"),
        (fresh, read_only / "fresh" / source.name, "make the directory"),
        (report, complete / "report" / "accuracy.png", "write"),
        (export, complete / "ticket_main_level_1.safetensors", "write"),
    ):
        last = stderr.strip().splitlines()[-1]
        assert status == 1, stderr
        assert last.startswith(f"sparse-tickets: error: cannot {action} {path}: {reason}")
        assert last.endswith("then run the same command again (what was written so far is kept)")
        assert "Traceback" not in stderr
    # Writable again, the run that needed a level resumes and completes.
    assert main([*SHORT_RUN, "--runs-dir", str(redo.parent), "--no-report"]) == 0
    assert sorted(Run.open(redo).finished_levels("reinit")) == [1, 2]
