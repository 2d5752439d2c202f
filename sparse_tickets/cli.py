"""The ``sparse-tickets`` command line: imp, train, instability, report, runs, export, build, list.

The experiment it runs lives in :mod:`sparse_tickets.lottery`; this module turns the
command line into calls to it. Every hyperparameter of
:class:`~sparse_tickets.lottery.hparams.Hparams` is a flag of ``imp`` and ``train``, generated
from the dataclass, with the preset (``--preset``, or the paper's preset for
``--model``/``--dataset``) supplying the values not given. A mistake (an invalid flag, an
unknown name, a missing data directory, a model that does not fit a dataset) is reported in one
line with exit status 2; ``SPARSE_TICKETS_DEBUG=1`` shows the traceback instead. Every value is
checked before anything trains or any directory is made. A disk that refuses a write (full,
read-only, not permitted) is one line naming the file, exit status 1; the run stays resumable.

``imp``, ``train`` and ``instability`` hold the run directory's lock while they work (see
:mod:`sparse_tickets.lottery.locking`): a second command on the same run says which process
holds it and exits with status 2, or with ``--wait`` waits for it.

``imp`` and ``train`` also run under torchrun (``torchrun --nproc_per_node N -m sparse_tickets
imp ...``): every process runs the same command, rank 0 alone writes files and shows progress
(see :mod:`sparse_tickets.lottery.distributed`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import math
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import __version__, data, files, models, ops, settings
from .compact.choice import MODES, default_mode_set_to
from .lottery import distributed, locking
from .lottery.export import load_masks
from .lottery.hparams import MAX_POINTS, Hparams, HparamsError, validate, validate_lengths
from .lottery.presets import DEFAULT_PRESET, PRESETS, preset_for
from .lottery.runs import BRANCHES, Diverged
from .nn import MaskedConv2d, masked_layers
from .ops.native.extension import ExtensionUnavailable
from .progress import LogLines, ProgressBars
from .pruning import parse_nm

PROG = "sparse-tickets"
USAGE_ERROR = 2
FAILURE = 1  # not the user's mistake: a disk that refuses a write, a file that cannot be read


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; one line is enough
        raise UsageError(f"{self.prog}: {message} (see --help)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return USAGE_ERROR
        args.command_line = " ".join([PROG, *map(shlex.quote, sys.argv[1:] if argv is None
                                                 else argv)])
        return args.handler(args) or 0
    except UsageError as error:
        # Every process of a torchrun job parses the same command line: rank 0 tells.
        return _fail(str(error), quiet=distributed.launched_rank() != 0)
    except KeyboardInterrupt:
        if distributed.launched_rank() == 0:
            print(f"{PROG}: interrupted; run the same command again to resume",
                  file=sys.stderr)
        return 130
    except distributed.MainRankFailed:
        return FAILURE  # rank 0 has reported its error
    except locking.RunLocked as error:
        return _fail(f"{PROG}: {error}")
    except files.WriteError as error:
        return _fail_with(error, FAILURE)
    except ExtensionUnavailable as error:  # a failed build under SPARSE_TICKETS_*_EXTENSION=force
        return _fail_with(error, FAILURE)
    except Diverged as error:  # the experiment failed, not the command line
        return _fail_with(error, FAILURE)
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            ModuleNotFoundError, ops.BackendError, distributed.DistributedError) as error:
        # The library reports bad input as these; anything else is a bug and shows its trace.
        return _fail_with(error, USAGE_ERROR)
    except OSError as error:
        # The system refused something the command needs (a file it may not read, ...): not a
        # bug, and nothing a traceback would explain better than the error's own words.
        if error.filename is not None and error.strerror:
            error = f"cannot use {error.filename}: {error.strerror}"
        return _fail_with(error, FAILURE)


def _fail_with(error, status: int) -> int:
    if settings.debug():
        raise
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    rank = distributed.launched_rank()
    _fail(f"{PROG}: error: {message}" if rank == 0 else f"{PROG}: rank {rank}: error: {message}")
    return status


def _fail(message: str, quiet: bool = False) -> int:
    if not quiet:
        print(message, file=sys.stderr)
    return USAGE_ERROR


class _Silent(LogLines):
    """The progress of a rank other than 0 under torchrun: rank 0 shows the job's."""

    def message(self, text: str) -> None:
        pass

    def end_level(self, metrics: dict) -> None:
        pass


# --- imp and train ---------------------------------------------------------------------------

def _run_imp(args) -> int:
    hp = _hparams(args)
    return _execute(args, hp)


def _run_train(args) -> int:
    hp = _hparams(args).replace(levels=0, controls="none", one_shot_density=None)
    masks = None
    if args.masks:
        path = Path(args.masks)
        if path.is_dir():
            raise UsageError(f"{PROG} train: masks file {path} is a directory; expected a "
                             f".safetensors or .pt file of masks")
        if not path.is_file():
            raise UsageError(f"{PROG} train: masks file {path} does not exist")
        masks = load_masks(path)
        _check_not_empty(masks, path)
        hp = hp.replace(masks_sha256=hashlib.sha256(path.read_bytes()).hexdigest()[:16])
    return _execute(args, hp, initial_masks=masks)


def _check_not_empty(masks, path: Path) -> None:
    """Masks that keep no weight train nothing: refused. A layer that keeps none can be
    meant (a residual block's skip still carries the signal), so it is only pointed out."""
    kept = {name: int(mask.sum()) for name, mask in masks.items()}
    if not any(kept.values()):
        raise UsageError(f"{PROG} train: masks file {path} keeps no weight at all (every mask "
                         f"is all False); expected masks that keep some weights")
    empty = [name for name, count in kept.items() if count == 0]
    if empty and distributed.launched_rank() == 0:
        print(f"{PROG}: note: masks file {path} keeps no weight of {', '.join(empty)}: "
              f"{'that layer passes' if len(empty) == 1 else 'those layers pass'} nothing on",
              file=sys.stderr)


def _execute(args, hp: Hparams, initial_masks=None) -> int:
    # --mode is not a hyperparameter: the modes compute the same numbers (up to rounding),
    # so a run may change mode between resumes and keeps its directory.
    with default_mode_set_to(args.mode):
        return _execute_in_mode(args, hp, initial_masks)


def _execute_in_mode(args, hp: Hparams, initial_masks) -> int:
    from .lottery.imp import check
    from .lottery.runs import Run

    splits = _load_data(hp, args.data_dir)
    device = _device(args.device)
    # Everything that can be refused is refused before the run directory exists.
    schedule, model = check(hp, splits)
    try:
        validate_lengths(hp, schedule.iterations_per_epoch)
    except HparamsError as error:
        raise UsageError(f"{PROG}: {error}") from None
    _check_fractions_apply(_given(args), hp.model, model)
    _check_nm_fits(hp, model)
    if initial_masks is not None:
        initial_masks.apply_to(model)  # names and shapes must be the model's
    offsets = _seed_offsets(args)
    if offsets is not None:
        return _execute_trials(args, hp, offsets)
    directory = None
    if distributed.launched_rank() == 0:  # the job's one writer
        directory = Run.make_directory(Path(args.runs_dir), hp).directory
        if args.name:
            Run(directory).record_name(args.name)
    with _one_writer(args, directory), distributed.process_group(device):
        return _execute_in_group(args, hp, initial_masks, splits, device)


def _one_writer(args, directory):
    """The run directory's lock, held by rank 0 (the job's one writer) for the command's life,
    taken before the other ranks are waited for."""
    if distributed.launched_rank() != 0:
        return contextlib.nullcontext()
    return locking.held(directory, command=args.command_line, wait=args.wait,
                        on_wait=lambda text: print(f"{PROG}: {text}", file=sys.stderr,
                                                   flush=True))


def _execute_in_group(args, hp: Hparams, initial_masks, splits, device: torch.device) -> int:
    if not distributed.is_main():
        progress = _Silent()
    else:
        progress = LogLines() if args.quiet else ProgressBars()
    # A bar cut short (Ctrl-C, an error) ends its line before the message that follows it.
    with contextlib.closing(progress):
        return _execute_with_progress(args, hp, initial_masks, splits, device, progress)


def _execute_with_progress(args, hp: Hparams, initial_masks, splits, device: torch.device,
                           progress) -> int:
    from .lottery.imp import LotteryRun

    main = distributed.is_main()
    lottery = LotteryRun(hp, Path(args.runs_dir), splits, device, args.checkpoint_every,
                         progress, initial_masks=initial_masks)
    run = lottery.run
    if distributed.active():
        processes = distributed.world_size()
        progress.message(f"{processes} processes ({distributed.backend_for(device)}), global "
                         f"batch {hp.batch_size}, {hp.batch_size // processes} per process")
    progress.message(f"run directory: {run.directory}")
    did_work = lottery.execute()
    if not main:
        return 0
    from .lottery.report import report_problem, write_report
    report_incomplete = report_problem(run.report_directory)
    if not did_work:
        progress.message(f"{run.directory} is already complete; nothing to do")
        if args.report and report_incomplete:
            progress.message(f"the report is not whole ({report_incomplete}); writing it again")
    if args.report and (did_work or report_incomplete):
        for path in write_report([run.directory], run.report_directory):
            progress.message(f"wrote {path}")
        progress.message((run.report_directory / "report.md").read_text())
    return 0


# --- trials ------------------------------------------------------------------------------

def _seed_offsets(args) -> Optional[list]:
    """The seed offsets of --trials/--seeds (None: one run), refused under torchrun."""
    from .lottery import trials
    try:
        offsets = trials.seed_offsets(args.trials, args.seeds)
    except trials.TrialsError as error:
        raise UsageError(f"{PROG}: {error}") from None
    if offsets is not None and distributed.launched_world_size() > 1:
        raise UsageError(f"{PROG}: --trials/--seeds under torchrun; expected one or the other "
                         f"(trials run as processes of their own; torchrun runs one big run)")
    return offsets


def _trial_argv(args, hp: Hparams) -> list:
    """The single-run command line of the trial of ``hp``: the flags given, its seeds."""
    from .lottery.hparams import SEED_FIELDS
    argv = [args.command]
    if args.command == "train" and args.masks:
        argv += ["--masks", str(Path(args.masks).resolve())]
    if args.preset is not None:
        argv += ["--preset", args.preset]
    for name, value in _given(args).items():
        if name not in SEED_FIELDS:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if args.lr_rewind:
        argv.append("--lr-rewind")
    argv += [item for name in SEED_FIELDS
             for item in (f"--{name.replace('_', '-')}", str(getattr(hp, name)))]
    argv += _run_options_argv(args)
    return argv


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
    return argv + ["--checkpoint-every", str(args.checkpoint_every), "--mode", args.mode,
                   "--quiet", "--no-report"]


def _execute_trials(args, hp: Hparams, offsets: list) -> int:
    from .lottery import trials
    from .lottery.runs import Run
    try:
        made = []
        for offset in offsets:
            trial_hp = trials.offset_seeds(hp, offset)
            directory = Run.make_directory(Path(args.runs_dir), trial_hp).directory
            made.append(trials.Trial(offset, directory, tuple(_trial_argv(args, trial_hp))))
    except trials.TrialsError as error:
        raise UsageError(f"{PROG}: {error}") from None
    return _run_trials(args, made, report_name=_trials_report_name(args, hp))


def _trials_report_name(args, hp: Hparams) -> str:
    """The trials' report directory under --runs-dir: named by --name, else by the settings
    the trials share (their hash with the seeds at the first trial's)."""
    return f"report-{args.name}" if getattr(args, "name", None) else f"report-{hp.run_name()}"


def _run_trials(args, made: list, report_name: str, runs_dir: Optional[Path] = None) -> int:
    """Run the trials with the chosen executor; then, for local ones, their report under
    ``runs_dir`` (default: --runs-dir)."""
    from .lottery import trials
    runs_dir = Path(runs_dir if runs_dir is not None else args.runs_dir)
    if args.executor != "local":
        return _submit_trials(args, made, runs_dir)
    parallel, threads = trials.split_cores(len(made), args.parallel, trials.cores())
    print(f"{PROG}: {len(made)} trials, {parallel} at a time, {threads} thread(s) each; "
          f"each trial's output in its run directory's {trials.LOG_NAME}", flush=True)

    def started(trial) -> None:
        print(f"{PROG}: trial +{trial.offset} started: {trial.directory}", flush=True)

    def ended(outcome) -> None:
        state = ("done" if outcome.returncode == 0 else
                 f"failed (status {outcome.returncode}): {_last_line(outcome.trial.log)}")
        print(f"{PROG}: trial +{outcome.trial.offset} {state} after {outcome.seconds:.0f} s",
              flush=True)

    outcomes = trials.run_local(made, parallel, threads, on_start=started, on_end=ended)
    failed = [outcome for outcome in outcomes if outcome.returncode]
    if args.report:
        _report_trials([trial.directory for trial in made], runs_dir / report_name)
    if failed:
        print(f"{PROG}: {len(failed)} of {len(made)} trials failed; the same command resumes "
              f"them (see each run directory's {trials.LOG_NAME})", file=sys.stderr)
        return FAILURE
    return 0


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"see {log}"
    return f"{lines[-1].strip()} (see {log})" if lines else f"see {log}"


def _note(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr)


def _report_trials(directories: list, output: Path) -> None:
    """The report over every trial that finished a level; the others are named and left out."""
    from .lottery.report import write_report
    from .lottery.runs import RunError
    try:
        for path in write_report(directories, output, on_skip=_note):
            print(f"{PROG}: wrote {path}")
    except RunError as error:  # no trial finished a level: nothing to report yet
        _note(f"no report: {error}")


def _submit_trials(args, made: list, runs_dir: Path) -> int:
    from .lottery import trials
    options = trials.SlurmOptions(partition=args.slurm_partition,
                                  time_minutes=args.slurm_time, cpus_per_task=args.slurm_cpus,
                                  gpus_per_task=args.slurm_gpus, mem_gb=args.slurm_mem_gb,
                                  parallel=args.parallel, account=args.slurm_account)
    folder = runs_dir / trials.SLURM_FOLDER
    cluster = "local" if args.executor == "submitit-local" else "slurm"
    try:
        jobs = trials.submit(made, folder, options, cluster=cluster)
    except trials.TrialsError as error:
        raise UsageError(f"{PROG}: {error}") from None
    for trial, job in zip(made, jobs):
        print(f"{PROG}: trial +{trial.offset}: job {job.job_id}: {trial.directory}", flush=True)
    print(f"{PROG}: submitit's files and logs in {folder}")
    if cluster == "slurm":
        print(f"{PROG}: follow them with `{PROG} runs {runs_dir}`; rerunning this command "
              f"resubmits only what is unfinished")
        return 0
    failed = 0
    for trial, job in zip(made, jobs):  # the local executor's jobs are this process's children
        try:
            job.result()
        except Exception as error:  # the job's exception, raised again here
            failed += 1
            print(f"{PROG}: trial +{trial.offset} failed: "
                  f"{str(error).strip().splitlines()[-1] if str(error).strip() else error!r}",
                  file=sys.stderr)
    return FAILURE if failed else 0


def _given(args) -> dict:
    """The hyperparameters given on the command line (the preset supplies the others)."""
    return {field.name: getattr(args, field.name) for field in _flag_fields()
            if getattr(args, field.name) is not None}


def _check_fractions_apply(given: dict, model_name: str, model) -> None:
    """A pruning rate given for a kind of layer the model does not have would prune nothing:
    refused, as it is surely meant for another model. A preset's rate is not the user's
    mistake, and a rate of 0 asks for nothing, so both pass."""
    output = models.output_layer(model) + ".weight"
    kinds = {"conv_fraction": "conv", "fc_fraction": "hidden fc"}
    present = set()
    for name, layer in masked_layers(model):
        if f"{name}.weight" != output:
            present.add("conv" if isinstance(layer, MaskedConv2d) else "hidden fc")
    for field_name, kind in kinds.items():
        if given.get(field_name) and kind not in present:
            flag = f"--{field_name.replace('_', '-')}"
            raise UsageError(f"{PROG}: {flag} {given[field_name]} given, but {model_name} has "
                             f"no {kind} layer to prune; expected no {flag} for this model")


def _check_nm_fits(hp: Hparams, model) -> None:
    """An N:M group longer than every row of the model would only pad each row with zeros
    (a group of 10**20 cannot even be allocated)."""
    if not hp.nm:
        return
    pattern = parse_nm(hp.nm)
    longest = max(math.prod(layer.weight.shape[1:]) for _, layer in masked_layers(model))
    if pattern.m > longest:
        raise UsageError(f"{PROG}: nm {hp.nm} groups {pattern.m} weights, more than the "
                         f"longest row of {hp.model} ({longest} weights); expected m at most "
                         f"{longest}")


def _hparams(args) -> Hparams:
    given = _given(args)
    if args.lr_rewind:
        if given.get("rewind", "lr") != "lr":
            raise UsageError(f"{PROG}: --lr-rewind and --rewind {given['rewind']} contradict "
                             f"each other; expected one of them")
        given["rewind"] = "lr"
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise UsageError(f"{PROG}: unknown preset {args.preset!r}; expected one of "
                             f"{', '.join(PRESETS)}")
        preset = args.preset
    else:
        default = PRESETS[DEFAULT_PRESET]
        preset = preset_for(given.get("model", default.model),
                            given.get("dataset", default.dataset))
    hp = PRESETS[preset].replace(**given)
    if "rewind_iteration" in given and "rewind" not in given and hp.rewind == "init":
        hp = hp.replace(rewind="iteration")  # naming a rewind point means rewinding to it
    hp = _distributed_batch(hp, args.scale_batch)
    if hp.model not in models.names():
        raise UsageError(f"{PROG}: unknown model {hp.model!r}; expected one of "
                         f"{', '.join(models.names())}")
    if hp.dataset not in data.names():
        raise UsageError(f"{PROG}: unknown dataset {hp.dataset!r}; expected one of "
                         f"{', '.join(data.names())}")
    if given.get("momentum") and hp.optimizer != "sgd":
        raise UsageError(f"{PROG}: --momentum {given['momentum']} given, but optimizer "
                         f"{hp.optimizer} takes no momentum; expected --optimizer sgd or no "
                         f"--momentum")
    try:
        validate(hp)
    except HparamsError as error:
        raise UsageError(f"{PROG}: {error}") from None
    return hp


def _distributed_batch(hp: Hparams, scale: bool) -> Hparams:
    """The hyperparameters a torchrun job of N processes trains with: the same global batch
    (each process a 1/N slice of it), or with ``--scale-batch`` a global batch N times larger
    and the learning rate N times larger (the linear scaling rule of Goyal et al., 2017). The
    scaled values are the run's hyperparameters: its directory is that of a single process
    given ``--batch-size`` and ``--lr`` of those values."""
    processes = distributed.launched_world_size()
    if scale:
        return hp.replace(batch_size=hp.batch_size * processes, lr=hp.lr * processes)
    if hp.batch_size % processes:
        raise UsageError(f"{PROG}: batch_size {hp.batch_size} does not divide by the "
                         f"{processes} processes of this job; expected a multiple of "
                         f"{processes}, or --scale-batch ({hp.batch_size} per process)")
    return hp


def _load_data(hp: Hparams, data_dir: Optional[str]):
    from .data import DatasetSplits
    needs_directory = hp.dataset in ("mnist", "cifar10")
    if needs_directory and not data_dir:
        raise UsageError(f"{PROG}: dataset {hp.dataset} is read from its standard files: pass "
                         f"--data-dir DIR (nothing is downloaded)")
    if data_dir and not needs_directory:
        kind = "generated" if hp.dataset == "synthetic" else "embedded"
        raise UsageError(f"{PROG}: dataset {hp.dataset} is {kind} and reads no directory, but "
                         f"--data-dir {data_dir} was given; expected no --data-dir (the mnist "
                         f"and cifar10 datasets read one)")
    if hp.dataset == "synthetic":
        shape = models.spec(hp.model).default_input_shape
        train_size = hp.train_size or 5000
        held_out = min(1000, max(100, train_size // 5))
        # One fixed dataset: runs with other data seeds must see the same examples, in
        # another order.
        splits = data.load("synthetic", input_shape=shape, train_size=train_size,
                           val_size=held_out, test_size=held_out, seed=0)
    else:
        splits = data.load(hp.dataset, root=data_dir if needs_directory else None)
    if hp.train_size and hp.dataset != "synthetic":
        if hp.train_size > len(splits.train):
            raise UsageError(f"{PROG}: train_size is {hp.train_size}; {hp.dataset} has "
                             f"{len(splits.train)} training examples")
        subset = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
        splits = DatasetSplits(splits.name, splits.train.subset(subset[:hp.train_size]),
                               splits.val, splits.test, splits.input_shape, splits.num_classes)
    return splits


def _device(name: Optional[str]) -> torch.device:
    """The device of ``--device``; under torchrun, a GPU is ``cuda:LOCAL_RANK``."""
    device = _named_device(name)
    if device.type != "cuda" or distributed.launched_world_size() == 1:
        return device
    local = distributed.local_rank()
    if device.index is not None and device.index != local:
        raise UsageError(f"{PROG}: --device {name} under torchrun, but each process uses the "
                         f"GPU of its LOCAL_RANK (here cuda:{local}); expected --device cuda")
    if local >= torch.cuda.device_count():
        raise UsageError(f"{PROG}: LOCAL_RANK is {local}, but torch sees "
                         f"{torch.cuda.device_count()} GPU(s); expected --nproc-per-node at "
                         f"most the number of GPUs")
    return torch.device("cuda", local)


_DEVICES = "cpu, cuda or cuda:N"


def _named_device(name: Optional[str]) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"{PROG}: unknown device {name!r}; expected {_DEVICES}") from None
    if device.type == "meta":
        raise UsageError(f"{PROG}: device {name} holds no data, so nothing can train on it; "
                         f"expected {_DEVICES}")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"{PROG}: device {name} is not supported; expected {_DEVICES}")
    if device.type == "cpu":
        # torch accepts any CPU index and ignores it: one CPU device, index 0.
        if device.index not in (None, 0):
            raise UsageError(f"{PROG}: device {name}: torch has one CPU device, cpu:0; "
                             f"expected {_DEVICES}")
        return torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{PROG}: device {name} asked for, but torch sees no CUDA GPU")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"{PROG}: device {name} asked for, but torch sees "
                         f"{torch.cuda.device_count()} GPU(s)")
    return device


# --- instability ---------------------------------------------------------------------------

def _run_instability(args) -> int:
    from .lottery.runs import Run
    run = Run.open(Path(args.run_dir))
    hp = run.hparams
    offsets = _seed_offsets(args)
    if offsets is not None:
        return _instability_trials(args, run, hp, offsets)
    with default_mode_set_to(args.mode):
        splits = _load_data(hp, args.data_dir)
        device = _device(args.device)
        with _one_writer(args, run.directory), distributed.process_group(device):
            return _instability_in_group(args, run, hp, splits, device)


def _instability_trials(args, run, hp: Hparams, offsets: list) -> int:
    """The analysis of every trial of RUN_DIR's experiment (its seeds plus each offset): the
    trials' runs must exist, as ``imp --trials`` made them beside it."""
    from .lottery import trials
    from .lottery.runs import Run
    made, missing = [], []
    for offset in offsets:
        try:
            trial_hp = trials.offset_seeds(hp, offset)
        except trials.TrialsError as error:
            raise UsageError(f"{PROG}: {error}") from None
        trial_run = Run.existing(run.directory.parent, trial_hp)
        if trial_run is None:
            missing.append(f"+{offset} ({run.directory.parent / trial_hp.run_name()})")
            continue
        found = trial_run.directory
        argv = ["instability", str(found.resolve()), "--level", str(args.level),
                "--branch", args.branch, "--points", str(args.points)]
        if args.iterations:
            argv += ["--iterations", *args.iterations]
        made.append(trials.Trial(offset, found, tuple(argv + _run_options_argv(args))))
    if missing:
        raise UsageError(f"{PROG}: no run of trial {', '.join(missing)} beside {run.directory}; "
                         f"expected the trials made first, by `imp --trials` or `--seeds`")
    return _run_trials(args, made, report_name=f"report-instability-{run.directory.name}",
                       runs_dir=run.directory.parent)


def _instability_in_group(args, run, hp: Hparams, splits, device: torch.device) -> int:
    progress = (_Silent() if not distributed.is_main() else LogLines() if args.quiet
                else ProgressBars())
    with contextlib.closing(progress):
        return _instability_with_progress(args, run, hp, splits, device, progress)


def _instability_with_progress(args, run, hp: Hparams, splits, device: torch.device,
                               progress) -> int:
    from .lottery.hparams import parse_steps
    from .lottery.imp import LotteryRun
    from .lottery.instability import InstabilityAnalysis

    main = distributed.is_main()
    lottery = LotteryRun(hp, run.directory.parent, splits, device, args.checkpoint_every,
                         progress, run_directory=run.directory)
    per_epoch = lottery.schedule.iterations_per_epoch
    iterations = ([parse_steps(text, per_epoch, "--iterations") for text in args.iterations]
                  if args.iterations else [lottery.start_iteration(args.level)])
    analysis = InstabilityAnalysis(lottery)
    analysis.check(args.branch, args.level, iterations, args.points)
    progress.message(f"run directory: {run.directory}")
    did_work = analysis.execute(args.branch, args.level, iterations, args.points)
    if main and not did_work:
        progress.message("these analyses are already done; nothing to do")
    if main and args.report:
        from .lottery.report import write_report
        for path in write_report([run.directory], run.report_directory):
            progress.message(f"wrote {path}")
    return 0


# --- report, export, list --------------------------------------------------------------------

def _run_report(args) -> int:
    from .lottery.report import write_report
    from .lottery.runs import Run
    directories = [Run.open(Path(d)).directory for d in args.run_dirs]  # before making output
    output = Path(args.output) if args.output else (
        directories[0] / "report" if len(directories) == 1 else Path("report"))
    for path in write_report(directories, output, on_skip=_note):
        print(f"wrote {path}")
    from .lottery.report.results import load_runs
    for run in load_runs(directories):
        for level in run.diverged:
            print(f"{PROG}: note: {level.branch} level {level.level} of {run.directory} "
                  f"diverged at iteration {level.iteration} ({level.cause}); it is listed "
                  f"apart in report.md", file=sys.stderr)
    return 0


def _run_export(args) -> int:
    from .lottery.export import export_ticket
    path = export_ticket(Path(args.run_dir), args.level, branch=args.branch,
                         output=Path(args.output) if args.output else None)
    print(f"wrote {path}")
    return 0


def _run_runs(args) -> int:
    from .lottery import listing
    root = Path(args.directory)
    if not root.is_dir():
        raise UsageError(f"{PROG} runs: {root} is not a directory; expected a directory of run "
                         f"directories (--runs-dir of imp and train)")
    found = listing.find_runs(root)
    if not found:
        print(f"no runs under {root}")
        return 0
    print(listing.table([listing.read_state(directory) for directory in found], root))
    return 0


def _run_build(args) -> int:
    from .ops.native import extension
    failed = False
    for spec in (extension.CPU, extension.CUDA):
        reason = extension.unavailable_reason(spec, retry=True)  # a remembered failure too
        if reason is None:
            record = extension.build_record(spec)
            when = ("already built" if record.build_seconds is None
                    else f"built in {record.build_seconds:.0f} s")
            print(f"{spec.kind} extension: {when}: {record.library}")
        else:
            print(f"{spec.kind} extension: {reason}")
        failed |= reason is not None and spec is extension.CPU
    print("backends:")
    for row in ops.backends():
        print(f"  {row}")
    return 1 if failed else 0


def _run_list(args) -> int:
    print("models:")
    for name in models.names():
        spec = models.spec(name)
        print(f"  {name:<15} input {'x'.join(map(str, spec.default_input_shape)):<8} "
              f"{spec.description}")
    print("datasets:")
    for name in data.names():
        where = {"mnist": "IDX files from --data-dir", "cifar10": "pickle batches from "
                 "--data-dir", "mnist5k": "embedded, 5,000 digits",
                 "synthetic": "generated"}.get(name, "")
        print(f"  {name:<15} {where}")
    print("presets:")
    for name, hp in PRESETS.items():
        print(f"  {name:<22} {hp.optimizer} lr {hp.lr:g}, batch {hp.batch_size}, "
              f"length {hp.iterations}, {hp.levels} levels, {hp.scope}"
              + (" (default)" if name == DEFAULT_PRESET else ""))
    print("backends:")
    for row in ops.backends():
        print(f"  {row}")
    return 0


# --- the parser ------------------------------------------------------------------------------

# Hparams' annotations, as strings (postponed evaluation), to the flag's parser.
_FLAG_TYPES = {"int": int, "float": float, "Optional[float]": float, "str": str}
_METAVARS = {int: "N", float: "X", str: "TEXT"}


def _flag_fields() -> list:
    return [f for f in dataclasses.fields(Hparams) if f.metadata.get("flag", True)]


def _add_hparam_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "hyperparameters (defaults: the preset's; see `sparse-tickets list`)")
    group.add_argument("--preset", help=f"start from this preset (default: the paper's for "
                                        f"--model/--dataset, else {DEFAULT_PRESET})")
    for field in _flag_fields():
        kind = _FLAG_TYPES[field.type]
        group.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=None,
                           metavar=_METAVARS[kind], help=field.metadata["help"])
    group.add_argument("--lr-rewind", action="store_true",
                       help="same as --rewind lr: keep trained weights, replay the learning "
                            "rate from --rewind-iteration")
    group.add_argument("--scale-batch", action="store_true",
                       help="under torchrun with N processes: each process takes a whole "
                            "--batch-size, so the global batch and the learning rate are both "
                            "multiplied by N (linear scaling rule, Goyal et al. 2017; consider "
                            "--warmup too). Both scaled values are recorded as the run's "
                            "hyperparameters. Lengths are in iterations of the global batch: "
                            "give them in epochs (160ep) to keep the preset's number of "
                            "epochs. Without it the global batch is --batch-size, split "
                            "across the N processes (it must divide by N). No effect in a "
                            "single process")


def _add_run_options(parser: argparse.ArgumentParser, runs_dir: bool = True) -> None:
    group = parser.add_argument_group("where and how")
    group.add_argument("--data-dir", type=_path("a directory"),
                       help="directory of the mnist IDX files or the cifar10 pickle batches")
    if runs_dir:
        group.add_argument("--runs-dir", default="runs", type=_path("a directory"),
                           help="where run directories are made (default: ./runs)")
    group.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    group.add_argument("--checkpoint-every", type=_positive, default=500, metavar="N",
                       help="checkpoint every N iterations, so a kill loses at most N "
                            "(default: 500)")
    group.add_argument("--mode", choices=MODES, default="auto",
                       help="how masked layers run: compact (kept weights only, cost falls "
                            "with density), dense (dense weight and mask) or auto (by density "
                            "at each mask change; the default)")
    group.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    group.add_argument("--wait", action="store_true",
                       help="when another command is working in the same run directory, wait "
                            "for it to end instead of exiting with status 2")
    group.add_argument("--no-report", dest="report", action="store_false",
                       help="do not write the report at the end")


def _add_trial_options(parser: argparse.ArgumentParser, named: bool = True) -> None:
    group = parser.add_argument_group(
        "trials (replicates that differ in their seeds, each an ordinary run directory)")
    if named:
        group.add_argument("--name", type=_path("a name"),
                           help="a name for the run (or the trials), shown by `runs` and "
                                "`report`")
    group.add_argument("--trials", type=_positive, metavar="N",
                       help="run N trials: seed offsets 0..N-1 added to the model, data and "
                            "control seeds (the first is the run without --trials)")
    group.add_argument("--seeds", metavar="OFFSETS",
                       help="the trials' seed offsets, like 0-4 or 0,3,7 (instead of --trials)")
    group.add_argument("--executor", choices=("local", "slurm", "submitit-local"),
                       default="local",
                       help="local: processes on this machine sharing its cores (default); "
                            "slurm: a SLURM job array through submitit, requeued after time "
                            "limits; submitit-local: that submission run on this machine, "
                            "to check it without a cluster")
    group.add_argument("--parallel", type=_positive, metavar="P",
                       help="trials running at once (default: local, one per core; slurm, "
                            "no limit)")
    group.add_argument("--slurm-partition", metavar="NAME", help="SLURM partition")
    group.add_argument("--slurm-account", metavar="NAME", help="SLURM account")
    group.add_argument("--slurm-time", type=_positive, metavar="MINUTES",
                       help="time limit of each task, in minutes (a task stopped by it is "
                            "requeued and resumes)")
    group.add_argument("--slurm-cpus", type=_positive, metavar="N", help="CPUs per task")
    group.add_argument("--slurm-gpus", type=_integer_at_least(0, "a count >= 0"), metavar="N",
                       help="GPUs per task")
    group.add_argument("--slurm-mem-gb", type=_positive, metavar="GB", help="memory per task")


def _integer_at_least(minimum: int, what: str, maximum: Optional[int] = None):
    """An argparse type: an int >= ``minimum`` (and <= ``maximum``), refused as ``what`` in the
    message."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"expected at most {maximum}, got {value}")
        return value
    return parse


_non_negative = _integer_at_least(0, "a level >= 0")
_positive = _integer_at_least(1, "a positive integer")


def _path(what: str):
    """An argparse type: a path, refused when empty or blank (``--runs-dir ""`` from an unset
    shell variable would otherwise mean the current directory)."""
    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return text
    return parse


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Find lottery tickets by iterative magnitude "
                                            "pruning, on masked layers.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    imp = commands.add_parser(
        "imp", help="find tickets: iterative magnitude pruning with rewinding and controls",
        description="Train, prune and rewind level after level; then the control branches; "
                    "then a report. With no arguments: LeNet-300-100 on the embedded mnist5k "
                    "digits, with the random-reinitialisation control. Rerunning the same "
                    "command resumes an interrupted run.")
    _add_hparam_flags(imp)
    _add_run_options(imp)
    _add_trial_options(imp)
    imp.set_defaults(handler=_run_imp)

    train = commands.add_parser(
        "train", help="one training run, dense or with the masks of a saved file",
        description="Train once (level 0 only, no controls): dense, or with --masks from a "
                    "ticket written by `export`, a level's masks.safetensors, or a file of "
                    "Masks.save.")
    train.add_argument("--masks", type=_path("a masks file"),
                       help="a ticket or masks file (.safetensors or .pt) to train with")
    _add_hparam_flags(train)
    _add_run_options(train)
    _add_trial_options(train)
    train.set_defaults(handler=_run_train)

    instability = commands.add_parser(
        "instability", help="instability analysis of a level: two copies from iteration K, "
                            "the error along the linear path between them",
        description="From the weights a level of a run has at iteration K, train two copies "
                    "with different data orders and evaluate the network along the linear "
                    "path between them; report the error barrier (Frankle et al., ICML 2020, "
                    "'Linear mode connectivity and the lottery ticket hypothesis'). The run's "
                    "hyperparameters are used; rerunning resumes; the report is rewritten.")
    instability.add_argument("run_dir", metavar="RUN_DIR", type=_path("a run directory"))
    instability.add_argument("--level", type=_non_negative, required=True,
                             help="the level to analyse")
    instability.add_argument("--branch", default="main", choices=BRANCHES,
                             help="main (the ticket), reinit or random_pruning (default: main)")
    instability.add_argument("--iterations", nargs="+", metavar="K",
                             help="spawn iterations, in iterations (500) or epochs (2ep), each "
                                  "at least the level's start (default: the level's start "
                                  "iteration)")
    instability.add_argument("--points", type=_integer_at_least(2, "at least 2 points",
                                                                MAX_POINTS),
                             default=11, help="points on the linear path, ends included "
                                              "(default: 11)")
    _add_run_options(instability, runs_dir=False)
    _add_trial_options(instability, named=False)
    instability.set_defaults(handler=_run_instability)

    report = commands.add_parser(
        "report", help="tables and plots from run directories",
        description="Write accuracy and early-stop plots (PNG), report.md and summary.csv. "
                    "Runs of one configuration with different seeds are averaged.")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=_path("a run directory"))
    report.add_argument("--output", type=_path("a directory"),
                        help="output directory (default: RUN_DIR/report for one run, ./report "
                             "for several)")
    report.set_defaults(handler=_run_report)

    export = commands.add_parser(
        "export", help="write a ticket (masks, weights at the rewind point and trained)",
        description="Write one level's ticket as safetensors: masks, the weights it started "
                    "from and the trained weights, with the hyperparameters as metadata. "
                    "Load it back with sparse_tickets.lottery.export.load_ticket.")
    export.add_argument("run_dir", metavar="RUN_DIR", type=_path("a run directory"))
    export.add_argument("--level", type=_non_negative, required=True,
                        help="the level to export")
    export.add_argument("--branch", default="main", choices=BRANCHES,
                        help="main (the ticket), reinit or random_pruning (default: main)")
    export.add_argument("--output", type=_path("a file path"),
                        help="file to write (default: "
                             "RUN_DIR/ticket_<branch>_level_<L>.safetensors)")
    export.set_defaults(handler=_run_export)

    runs = commands.add_parser(
        "runs", help="list the runs under a directory: name, configuration, state, progress",
        description="List every run directory under DIRECTORY (default: ./runs) with its "
                    "name, model and dataset, seeds, the settings in which the runs differ, "
                    "its state (done, stopped, running, diverged) and levels done per "
                    "branch. Reads files only: safe while runs train.")
    runs.add_argument("directory", nargs="?", default="runs", metavar="DIRECTORY")
    runs.set_defaults(handler=_run_runs)

    build = commands.add_parser(
        "build", help="build the compiled kernels now, instead of on first use",
        description="Build (or find cached) the C++ extension, and the CUDA extension where "
                    "nvcc and a CUDA build of torch exist; then list the backends. A build "
                    "that failed before (remembered per compiler and kernel sources, so that "
                    "other commands do not retry it) is tried again.")
    build.set_defaults(handler=_run_build)

    listing = commands.add_parser("list", help="models, datasets, presets and backends",
                                  description="List what can be named on the command line.")
    listing.set_defaults(handler=_run_list)
    return parser


if __name__ == "__main__":
    sys.exit(main())
