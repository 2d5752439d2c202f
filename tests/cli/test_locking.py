"""One command per run directory: a second command on a busy run names the process that holds
it and exits 2, or waits with --wait; the lock dies with its holder; Ctrl-C ends the progress
bar's line before its own message."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sparse_tickets.cli import main
from tests.cli.conftest import SHORT

SHORT_RUN = ["imp", *SHORT, "--controls", "reinit,random_pruning"]  # the short_run fixture's
INTERRUPTED = "sparse-tickets: interrupted; run the same command again to resume"


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _environment() -> dict:
    path = os.pathsep.join(
        filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")])
    )
    # No compiled kernels: these commands test the lock and the terminal, and a build of the
    # extension in progress elsewhere on the machine would only hold them up.
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": path,
        "SPARSE_TICKETS_CPU_EXTENSION": "skip",
    }


def test_a_second_command_on_a_busy_run_names_the_holder_and_exits_2(
    short_run, lock_holder, capsys
):
    runs, run_directory = short_run
    holder = lock_holder(run_directory)
    assert main([*SHORT_RUN, "--runs-dir", str(runs), "--no-report"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(
        f"sparse-tickets: run directory {run_directory} is in use by "
        f"process {holder.pid} (holder --of the lock, since "
    )
    assert error.endswith(
        "expected one command at a time per run: wait for it to end, or pass --wait"
    )
    assert "\n" not in error
    assert main(["instability", str(run_directory), "--level", "1", "--quiet", "--no-report"]) == 2
    assert f"is in use by process {holder.pid}" in capsys.readouterr().err
    holder.stdin.close()  # lets go: the run is free again
    assert holder.wait() == 0
    assert main([*SHORT_RUN, "--runs-dir", str(runs), "--no-report"]) == 0
    assert "already complete; nothing to do" in capsys.readouterr().err


def test_wait_waits_for_the_holder_then_goes_on(short_run, lock_holder):
    runs, run_directory = short_run
    holder = lock_holder(run_directory)
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sparse_tickets",
            *SHORT_RUN,
            "--runs-dir",
            str(runs),
            "--no-report",
            "--wait",
        ],
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        said = waiter.stderr.readline().strip()
        assert said == (
            f"sparse-tickets: run directory {run_directory} is in use by process "
            f"{holder.pid} ({said.split(' (', 1)[1].split(')')[0]}); waiting for "
            f"it to end"
        )
        assert "holder --of the lock" in said
        assert waiter.poll() is None  # blocked on the lock
        holder.stdin.close()
        assert holder.wait() == 0
        rest = waiter.stderr.read()
        assert waiter.wait(timeout=300) == 0, rest
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert "already complete; nothing to do" in rest


def test_a_killed_holder_leaves_the_run_free(short_run, lock_holder, capsys):
    runs, run_directory = short_run
    holder = lock_holder(run_directory)
    holder.kill()
    holder.wait()
    assert main([*SHORT_RUN, "--runs-dir", str(runs), "--no-report"]) == 0
    assert "already complete; nothing to do" in capsys.readouterr().err


def test_a_running_imp_holds_its_run_and_ctrl_c_ends_its_bar_first(tmp_path, capsys):
    # Long enough that it is still training when told to stop; it never runs to the end.
    arguments = [
        "imp",
        "--iterations",
        "20000",
        "--levels",
        "0",
        "--controls",
        "none",
        "--eval-every",
        "1000",
        "--checkpoint-every",
        "10",
        "--train-size",
        "600",
        "--no-report",
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    with open(tmp_path / "stderr", "w") as stderr:
        # Ctrl-C as at a terminal: a job started in the background (CI may run us so) inherits
        # SIGINT ignored, and Python keeps an ignored SIGINT ignored.
        running = subprocess.Popen(
            [sys.executable, "-m", "sparse_tickets", *arguments],
            env=_environment(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=_interruptible,
        )
    try:
        deadline = time.monotonic() + 600
        while not list(tmp_path.glob("runs/*/main/level_0/checkpoint.pt.sha256")):
            assert running.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        # Two real commands on one run: the second is refused while the first trains.
        assert main([*arguments, "--quiet"]) == 2
        error = capsys.readouterr().err.strip()
        assert f"is in use by process {running.pid} (sparse-tickets imp --iterations 20000" in (
            error
        )
        running.send_signal(signal.SIGINT)
        assert running.wait(timeout=120) == 130
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    shown = (tmp_path / "stderr").read_text()
    lines = shown.split("\n")
    assert lines[-1] == "" and lines[-2] == INTERRUPTED  # the message alone on its line
    assert "level 0 (100.0%)" in lines[-3] and "it/s" in lines[-3]  # the bar ended its own
    assert shown.count(INTERRUPTED) == 1
