"""Trials: replicates of one experiment that differ only in their seeds, run together.

The paper's figures are means of several trials. A trial is an ordinary run directory, made
and resumed by the ordinary single-run command; this module only decides which trials there
are and runs their commands, in parallel processes on this machine or as a SLURM job array
through ``submitit``.

Trial seeds: a trial of seed offset ``s`` adds ``s`` to the run's model, data and control
seeds, so ``--trials 5`` is offsets 0-4 and its first trial is the run the same command makes
without ``--trials`` (an existing single run is reused, not retrained).

Processes on one machine split its cores: ``parallel`` processes of ``cores // parallel``
threads each (``OMP_NUM_THREADS``, which torch reads at start-up), so they do not oversubscribe
the cores. Each trial's output goes to ``trial.log`` in its run directory.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .hparams import MAX_SEED, SEED_FIELDS, Hparams
from .runs import Run

# The environment variables the thread pools of torch, OpenMP and MKL read at start-up.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
LOG_NAME = "trial.log"
SLURM_FOLDER = "slurm"
MAX_TRIALS = 1000


class TrialsError(ValueError):
    """A --trials or --seeds value that cannot be used, with what was expected."""


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,3,7"`` -> [0, 3, 7]; ranges and lists mix."""
    offsets: list[int] = []
    for part in str(text).split(","):
        match = _RANGE.match(part)
        if not match:
            raise TrialsError(f"--seeds is {text!r}; expected seed offsets like 0-4 or 0,3,7")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise TrialsError(f"--seeds has the range {part.strip()}; expected first <= last")
        offsets += range(first, last + 1)
    if len(set(offsets)) != len(offsets):
        raise TrialsError(f"--seeds {text!r} names a seed twice; expected each seed once")
    if len(offsets) > MAX_TRIALS:
        raise TrialsError(
            f"--seeds {text!r} names {len(offsets)} trials; expected at most {MAX_TRIALS}"
        )
    return offsets


def seed_offsets(trials: int | None, seeds: str | None) -> list[int] | None:
    """The seed offsets of ``--trials N`` or ``--seeds ...``; None for a single run."""
    if trials is not None and seeds is not None:
        raise TrialsError(
            "--trials and --seeds both given; expected one of them (--trials N is --seeds 0-(N-1))"
        )
    if trials is not None:
        if not 1 <= trials <= MAX_TRIALS:
            raise TrialsError(f"--trials is {trials}; expected 1 to {MAX_TRIALS}")
        return list(range(trials))
    return parse_seeds(seeds) if seeds is not None else None


def offset_seeds(hp: Hparams, offset: int) -> Hparams:
    """``hp`` with ``offset`` added to its model, data and control seeds."""
    seeds = {name: getattr(hp, name) + offset for name in SEED_FIELDS}
    too_large = [name for name, seed in seeds.items() if seed > MAX_SEED]
    if too_large:
        raise TrialsError(
            f"seed offset {offset} takes {too_large[0]} past 2**64 - 1; expected "
            f"smaller seeds or offsets"
        )
    return hp.replace(**seeds)


@dataclass(frozen=True)
class Trial:
    """One replicate: its seed offset, run directory and single-run command line (the
    arguments after ``sparse-tickets``)."""

    offset: int
    directory: Path
    argv: tuple

    @property
    def log(self) -> Path:
        return self.directory / LOG_NAME

    def command_line(self) -> str:
        return " ".join(["sparse-tickets", *map(shlex.quote, self.argv)])


def make_trials(
    runs_directory: Path,
    hp: Hparams,
    offsets: Sequence[int],
    argv_of: Callable[[Hparams], Sequence[str]],
) -> list[Trial]:
    """The trials of ``hp`` at each seed offset, their run directories made under
    ``runs_directory`` (an existing one is reused); ``argv_of`` gives the single-run command
    line of a trial's hyperparameters."""
    made = []
    for offset in offsets:
        trial_hp = offset_seeds(hp, offset)
        directory = Run.make_directory(runs_directory, trial_hp).directory
        made.append(Trial(offset, directory, tuple(argv_of(trial_hp))))
    return made


def existing_trials(
    run: Run, offsets: Sequence[int], argv_of: Callable[[Path], Sequence[str]]
) -> list[Trial]:
    """The trials of ``run``'s experiment (its seeds plus each offset), which must exist beside
    it, as ``--trials`` made them; ``argv_of`` gives the command line that works on a trial's
    run directory."""
    hp, beside = run.hparams, run.directory.parent
    found, missing = [], []
    for offset in offsets:
        trial_hp = offset_seeds(hp, offset)
        trial_run = Run.existing(beside, trial_hp)
        if trial_run is None:
            missing.append(f"+{offset} ({beside / trial_hp.run_name()})")
            continue
        found.append(Trial(offset, trial_run.directory, tuple(argv_of(trial_run.directory))))
    if missing:
        raise TrialsError(
            f"no run of trial {', '.join(missing)} beside {run.directory}; "
            f"expected the trials made first, by `imp --trials` or `--seeds`"
        )
    return found


def report_name(hp: Hparams, name: str | None = None) -> str:
    """The trials' report directory's name: by their ``name``, else by the settings they
    share (the hash of ``hp``, the first trial's hyperparameters)."""
    return f"report-{name}" if name else f"report-{hp.run_name()}"


def instability_report_name(run: Run) -> str:
    """The report directory's name of the instability analyses of ``run``'s trials."""
    return f"report-instability-{run.directory.name}"


def cores() -> int:
    """The cores this process may run on (its affinity, as a SLURM allocation sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


def split_cores(count: int, parallel: int | None, available: int) -> tuple[int, int]:
    """``(processes at once, threads each)`` for ``count`` trials on ``available`` cores:
    by default one process per core up to the trial count, threads sharing the cores."""
    if parallel is not None and parallel < 1:
        raise TrialsError(f"--parallel is {parallel}; expected at least 1")
    at_once = min(count, parallel if parallel is not None else available)
    return at_once, max(1, available // at_once)


def thread_environment(threads: int) -> dict:
    """This process's environment with the thread pools of a process on ``threads`` threads."""
    environment = dict(os.environ)
    for name in _THREAD_VARIABLES:
        environment[name] = str(threads)
    return environment


@dataclass
class Outcome:
    trial: Trial
    returncode: int
    seconds: float

    def last_line(self) -> str:
        """The trial log's last line, to say why a trial failed, with where to read more."""
        log = self.trial.log
        try:
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return f"see {log}"
        return f"{lines[-1].strip()} (see {log})" if lines else f"see {log}"


def run_local(
    trials: Sequence[Trial],
    parallel: int,
    threads: int,
    on_start: Callable[[Trial], None] = lambda trial: None,
    on_end: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """Run the trials' commands as child processes, ``parallel`` at a time, each on
    ``threads`` threads with its output in its ``trial.log``; their outcomes in trial order.

    Ctrl-C reaches the children too (one process group): each stops resumably, and the
    interrupt is raised here once they have ended.
    """
    waiting, running, outcomes = list(trials), {}, {}
    environment = thread_environment(threads)
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                trial = waiting.pop(0)
                trial.directory.mkdir(parents=True, exist_ok=True)
                log = open(trial.log, "ab")
                log.write(f"\n$ {trial.command_line()}\n".encode())
                log.flush()
                process = subprocess.Popen(
                    [sys.executable, "-m", "sparse_tickets", *trial.argv],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=environment,
                )
                running[process] = (trial, log, time.monotonic())
                on_start(trial)
            for process in [p for p in running if p.poll() is not None]:
                trial, log, started = running.pop(process)
                log.close()
                outcomes[trial.offset] = Outcome(
                    trial, process.returncode, time.monotonic() - started
                )
                on_end(outcomes[trial.offset])
            time.sleep(0.05)
    except KeyboardInterrupt:
        for process in running:  # they had the SIGINT too; let them save and stop
            process.wait()
        raise
    return [outcomes[trial.offset] for trial in trials]


class TrialTask:
    """A SLURM array task: one trial's command, as a process of its own on the task's cores
    (its output in the task's log).

    submitit calls :meth:`checkpoint` when SLURM is about to stop the task (its time limit, a
    preemption): the same command is requeued, and as every run resumes from its last
    checkpoint the requeued task goes on where this one stopped."""

    def __call__(self, argv: Sequence[str]) -> int:
        command = [sys.executable, "-m", "sparse_tickets", *argv]
        status = subprocess.run(
            command, stdin=subprocess.DEVNULL, env=thread_environment(cores())
        ).returncode
        if status:
            raise RuntimeError(f"sparse-tickets {' '.join(argv)} exited with status {status}")
        return status

    def checkpoint(self, argv: Sequence[str]):
        import submitit

        return submitit.helpers.DelayedSubmission(self, argv)


@dataclass(frozen=True)
class SlurmOptions:
    """What a SLURM array task asks for; None leaves the cluster's default."""

    partition: str | None = None
    time_minutes: int | None = None
    cpus_per_task: int | None = None
    gpus_per_task: int | None = None
    mem_gb: float | None = None
    parallel: int | None = None  # array tasks running at once
    account: str | None = None


def submit(
    trials: Sequence[Trial], folder: Path, options: SlurmOptions, cluster: str = "slurm"
) -> list:
    """Submit the trials as one job array through submitit; its jobs, in trial order.

    ``cluster="local"`` is submitit's local executor: the same submission, run as processes
    of this machine (how a submission is checked without a cluster)."""
    try:
        import submitit
    except ImportError:
        raise TrialsError(
            "--executor slurm needs submitit; expected `pip install submitit`"
        ) from None
    # A task stopped by its time limit or a preemption is requeued (up to 20 times): the runs
    # resume from their last checkpoint.
    requeues = {"slurm_max_num_timeout": 20} if cluster == "slurm" else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **requeues)
    shared = {
        "name": "sparse-tickets",
        "timeout_min": options.time_minutes,
        "cpus_per_task": options.cpus_per_task,
        "gpus_per_node": options.gpus_per_task,
        "mem_gb": options.mem_gb,
        "tasks_per_node": 1,
        "nodes": 1,
    }
    specific = (
        {
            "slurm_partition": options.partition,
            "slurm_account": options.account,
            "slurm_array_parallelism": options.parallel,
        }
        if cluster == "slurm"
        else {}
    )
    executor.update_parameters(**{k: v for k, v in {**shared, **specific}.items() if v is not None})
    return executor.map_array(TrialTask(), [list(trial.argv) for trial in trials])
