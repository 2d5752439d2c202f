"""``--trials`` and ``--seeds``: the same command once per seed offset, each trial an ordinary
single-run command of its own (:mod:`sparse_tickets.lottery.trials`), run here in parallel
processes or submitted to SLURM; then, for local trials, one report over them all."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

from ..lottery import distributed, locking, trials
from ..lottery.hparams import SEED_FIELDS, Hparams
from ..lottery.runs import Run, RunError
from .common import FAILURE, PROG, UsageError, note, usage_errors
from .flags import given


def seed_offsets(args) -> list | None:
    """The seed offsets of --trials/--seeds (None: one run), refused under torchrun."""
    with usage_errors(trials.TrialsError):
        offsets = trials.seed_offsets(args.trials, args.seeds)
    if offsets is not None and distributed.launched_world_size() > 1:
        raise UsageError(
            f"{PROG}: --trials/--seeds under torchrun; expected one or the other "
            f"(trials run as processes of their own; torchrun runs one big run)"
        )
    return offsets


def run_new(args, hp: Hparams, offsets: list, start: StackedStart) -> int:
    """The trials of ``imp`` or ``train``: their run directories made under --runs-dir.
    ``start`` is what a stacked executor needs to build the trials' runs in this process."""
    with usage_errors(trials.TrialsError):
        made = trials.make_trials(
            Path(args.runs_dir), hp, offsets, lambda trial_hp: _trial_argv(args, trial_hp)
        )

    def stacked(parallel: int, threads: int) -> list:
        return _stacked(args, hp, made, parallel, threads, start)

    return _run(
        args,
        made,
        Path(args.runs_dir),
        report_name=trials.report_name(hp, getattr(args, "name", None)),
        execute=stacked if args.executor == "stacked" else None,
    )


@dataclass(frozen=True)
class StackedStart:
    """What the trials' runs are built from in this process: their data, device, the masks of
    `train --masks`."""

    splits: object
    device: object
    initial_masks: object = None


def _stacked(
    args, hp: Hparams, made: list, parallel: int, threads: int, start: StackedStart
) -> list:
    """The trials' outcomes under ``--executor stacked``."""
    from ..lottery.imp import LotteryRun  # the training loop: not loaded for other commands
    from ..lottery.session import progress_output
    from ..lottery.stacked_trials import StackedTrials, TrialLines, own_startup_seconds

    with contextlib.ExitStack() as locks:  # each trial's one writer while its run is made
        for trial in made:
            locks.enter_context(locking.held(trial.directory, command=args.command_line))
        runs = [
            LotteryRun(
                trials.offset_seeds(hp, trial.offset),
                Path(args.runs_dir),
                start.splits,
                start.device,
                args.checkpoint_every,
                TrialLines(trial.offset),
                initial_masks=start.initial_masks,
                until_level=getattr(args, "until_level", None),
            )
            for trial in made
        ]
        for run in runs:
            if getattr(args, "name", None):
                run.run.record_name(args.name)
            run.ensure_initial_state()
    # What a trial process does before its first step is done here now (the optimizers'
    # first construction imports torch._dynamo): its length is a trial process's start-up.
    import torch._dynamo  # noqa: F401

    startup = own_startup_seconds()
    with contextlib.closing(progress_output(args.quiet)) as progress:
        driver = StackedTrials(
            made,
            runs,
            progress,
            parallel=parallel,
            threads=threads,
            startup_seconds=startup,
            until_level_argv=(
                (lambda trial, level: [*trial.argv, "--until-level", str(level)])
                if args.command == "imp"
                else None
            ),
            run_processes=lambda chosen: _run_processes(chosen, parallel, threads),
            command=args.command_line,
        )
        return driver.execute()


def run_existing(args, run: Run, offsets: list) -> int:
    """The instability analyses of every trial of RUN_DIR's experiment (its seeds plus each
    offset): the trials' runs must exist, as ``imp --trials`` made them beside it."""

    def argv_of(directory: Path) -> list:
        argv = [
            "instability",
            str(directory.resolve()),
            "--level",
            str(args.level),
            "--branch",
            args.branch,
            "--points",
            str(args.points),
        ]
        if args.iterations:
            argv += ["--iterations", *args.iterations]
        return argv + _run_options_argv(args)

    if args.executor == "stacked":
        raise UsageError(
            f"{PROG} instability: --executor stacked trains the levels of imp and train; "
            f"expected --executor local, slurm or submitit-local"
        )
    with usage_errors(trials.TrialsError):
        found = trials.existing_trials(run, offsets, argv_of)
    return _run(args, found, run.directory.parent, report_name=trials.instability_report_name(run))


def _trial_argv(args, hp: Hparams) -> list:
    """The single-run command line of the trial of ``hp``: the flags given, its seeds."""
    argv = [args.command]
    if args.command == "train" and args.masks:
        argv += ["--masks", str(Path(args.masks).resolve())]
    if args.preset is not None:
        argv += ["--preset", args.preset]
    for name, value in given(args).items():
        if name not in SEED_FIELDS:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if args.lr_rewind:
        argv.append("--lr-rewind")
    if getattr(args, "until_level", None) is not None:
        argv += ["--until-level", str(args.until_level)]
    argv += [
        item
        for name in SEED_FIELDS
        for item in (f"--{name.replace('_', '-')}", str(getattr(hp, name)))
    ]
    return argv + _run_options_argv(args)


def _run_options_argv(args) -> list:
    """The where-and-how options of a trial's command: its log, not a terminal, shows its
    progress; the trials' report is written once, over all of them."""
    argv = ["--runs-dir", str(Path(args.runs_dir).resolve())] if hasattr(args, "runs_dir") else []
    if args.data_dir:
        argv += ["--data-dir", str(Path(args.data_dir).resolve())]
    if args.device:
        argv += ["--device", args.device]
    if getattr(args, "name", None):
        argv += ["--name", args.name]
    return argv + [
        "--checkpoint-every",
        str(args.checkpoint_every),
        "--mode",
        args.mode,
        "--quiet",
        "--no-report",
    ]


def _run(args, made: list, runs_dir: Path, report_name: str, execute=None) -> int:
    """Run the trials with the chosen executor (``execute(parallel, threads)`` when given, else
    processes); then, for those run here, their report under ``runs_dir``."""
    if args.executor in ("slurm", "submitit-local"):
        return _submit(args, made, runs_dir)
    parallel, threads = trials.split_cores(len(made), args.parallel, trials.cores())
    how = "stacked where that is faster, else as processes" if execute else "as processes"
    print(
        f"{PROG}: {len(made)} trials, {how}: {parallel} at a time, {threads} thread(s) each; "
        f"each trial's output in its run directory's {trials.LOG_NAME}",
        flush=True,
    )
    if execute is None:
        outcomes = _run_processes(made, parallel, threads)
    else:
        outcomes = execute(parallel, threads)
    failed = [outcome for outcome in outcomes if outcome.returncode]
    if args.report:
        _report([trial.directory for trial in made], runs_dir / report_name)
    if failed:
        print(
            f"{PROG}: {len(failed)} of {len(made)} trials failed; the same command resumes "
            f"them (see each run directory's {trials.LOG_NAME})",
            file=sys.stderr,
        )
        return FAILURE
    return 0


def _run_processes(made: list, parallel: int, threads: int) -> list:
    """The trials' commands as processes here, each start and end said."""

    def started(trial) -> None:
        print(f"{PROG}: trial +{trial.offset} started: {trial.directory}", flush=True)

    def ended(outcome) -> None:
        state = (
            "done"
            if outcome.returncode == 0
            else f"failed (status {outcome.returncode}): {outcome.last_line()}"
        )
        print(
            f"{PROG}: trial +{outcome.trial.offset} {state} after {outcome.seconds:.0f} s",
            flush=True,
        )

    return trials.run_local(made, parallel, threads, on_start=started, on_end=ended)


def _report(directories: list, output: Path) -> None:
    """The report over every trial that finished a level; the others are named and left out."""
    from ..lottery.report import write_report  # its plots: not loaded for other commands

    try:
        for path in write_report(directories, output, on_skip=note):
            print(f"{PROG}: wrote {path}")
    except RunError as error:  # no trial finished a level: nothing to report yet
        note(f"no report: {error}")


def _submit(args, made: list, runs_dir: Path) -> int:
    options = trials.SlurmOptions(
        partition=args.slurm_partition,
        time_minutes=args.slurm_time,
        cpus_per_task=args.slurm_cpus,
        gpus_per_task=args.slurm_gpus,
        mem_gb=args.slurm_mem_gb,
        parallel=args.parallel,
        account=args.slurm_account,
    )
    folder = runs_dir / trials.SLURM_FOLDER
    cluster = "local" if args.executor == "submitit-local" else "slurm"
    with usage_errors(trials.TrialsError):
        jobs = trials.submit(made, folder, options, cluster=cluster)
    for trial, job in zip(made, jobs):
        print(f"{PROG}: trial +{trial.offset}: job {job.job_id}: {trial.directory}", flush=True)
    print(f"{PROG}: submitit's files and logs in {folder}")
    if cluster == "slurm":
        print(
            f"{PROG}: follow them with `{PROG} runs {runs_dir}`; rerunning this command "
            f"resubmits only what is unfinished"
        )
        return 0
    failed = 0
    for trial, job in zip(made, jobs):  # the local executor's jobs are this process's children
        try:
            job.result()
        except Exception as error:  # the job's exception, raised again here
            failed += 1
            print(
                f"{PROG}: trial +{trial.offset} failed: "
                f"{str(error).strip().splitlines()[-1] if str(error).strip() else error!r}",
                file=sys.stderr,
            )
    return FAILURE if failed else 0
