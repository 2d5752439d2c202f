"""The options several commands share, and the argument types that refuse a bad value in one
line: the hyperparameter flags (generated from
:class:`~sparse_tickets.lottery.hparams.Hparams`), where and how a run works, and trials."""

from __future__ import annotations

import argparse
import dataclasses

from ..compact.choice import MODES
from ..lottery.hparams import Hparams
from ..lottery.presets import DEFAULT_PRESET

# Hparams' annotations, as strings (postponed evaluation), to the flag's parser.
_FLAG_TYPES = {"int": int, "float": float, "float | None": float, "str": str}
_METAVARS = {int: "N", float: "X", str: "TEXT"}


def flag_fields() -> list:
    """The fields of Hparams that are flags of ``imp`` and ``train``."""
    return [f for f in dataclasses.fields(Hparams) if f.metadata.get("flag", True)]


def integer_at_least(minimum: int, what: str, maximum: int | None = None):
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


non_negative = integer_at_least(0, "a level >= 0")
positive = integer_at_least(1, "a positive integer")


def path(what: str):
    """An argparse type: a path, refused when empty or blank (``--runs-dir ""`` from an unset
    shell variable would otherwise mean the current directory)."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return text

    return parse


def add_hparam_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "hyperparameters (defaults: the preset's; see `sparse-tickets list`)"
    )
    group.add_argument(
        "--preset",
        help=f"start from this preset (default: the paper's for "
        f"--model/--dataset, else {DEFAULT_PRESET})",
    )
    for field in flag_fields():
        kind = _FLAG_TYPES[field.type]
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=kind,
            default=None,
            metavar=_METAVARS[kind],
            help=field.metadata["help"],
        )
    group.add_argument(
        "--lr-rewind",
        action="store_true",
        help="same as --rewind lr: keep trained weights, replay the learning "
        "rate from --rewind-iteration",
    )
    group.add_argument(
        "--scale-batch",
        action="store_true",
        help="under torchrun with N processes: each process takes a whole "
        "--batch-size, so the global batch and the learning rate are both "
        "multiplied by N (linear scaling rule, Goyal et al. 2017; consider "
        "--warmup too). Both scaled values are recorded as the run's "
        "hyperparameters. Lengths are in iterations of the global batch: "
        "give them in epochs (160ep) to keep the preset's number of "
        "epochs. Without it the global batch is --batch-size, split "
        "across the N processes (it must divide by N). No effect in a "
        "single process",
    )


def add_run_options(parser: argparse.ArgumentParser, runs_dir: bool = True) -> None:
    group = parser.add_argument_group("where and how")
    group.add_argument(
        "--data-dir",
        type=path("a directory"),
        help="directory of the mnist IDX files or the cifar10 pickle batches",
    )
    if runs_dir:
        group.add_argument(
            "--runs-dir",
            default="runs",
            type=path("a directory"),
            help="where run directories are made (default: ./runs)",
        )
    group.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    group.add_argument(
        "--checkpoint-every",
        type=positive,
        default=500,
        metavar="N",
        help="checkpoint every N iterations, so a kill loses at most N (default: 500)",
    )
    group.add_argument(
        "--mode",
        choices=MODES,
        default="auto",
        help="how masked layers run: compact (kept weights only, cost falls "
        "with density), dense (dense weight and mask) or auto (by density "
        "at each mask change; the default)",
    )
    group.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    group.add_argument(
        "--wait",
        action="store_true",
        help="when another command is working in the same run directory, wait "
        "for it to end instead of exiting with status 2",
    )
    group.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        help="do not write the report at the end",
    )


EXECUTORS = ("local", "stacked", "slurm", "submitit-local")


def add_trial_options(parser: argparse.ArgumentParser, named: bool = True) -> None:
    group = parser.add_argument_group(
        "trials (replicates that differ in their seeds, each an ordinary run directory)"
    )
    if named:
        group.add_argument(
            "--name",
            type=path("a name"),
            help="a name for the run (or the trials), shown by `runs` and `report`",
        )
    group.add_argument(
        "--trials",
        type=positive,
        metavar="N",
        help="run N trials: seed offsets 0..N-1 added to the model, data and "
        "control seeds (the first is the run without --trials)",
    )
    group.add_argument(
        "--seeds",
        metavar="OFFSETS",
        help="the trials' seed offsets, like 0-4 or 0,3,7 (instead of --trials)",
    )
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: processes on this machine sharing its cores (default); "
        "stacked (imp, train): this process trains the trials as one stacked network "
        "from the level on where that is measured to be faster than processes, the levels "
        "before as processes; slurm: a SLURM job array through submitit, requeued "
        "after time limits; submitit-local: that submission run on this machine, "
        "to check it without a cluster",
    )
    group.add_argument(
        "--parallel",
        type=positive,
        metavar="P",
        help="trials running at once (default: local, one per core; slurm, no limit)",
    )
    group.add_argument("--slurm-partition", metavar="NAME", help="SLURM partition")
    group.add_argument("--slurm-account", metavar="NAME", help="SLURM account")
    group.add_argument(
        "--slurm-time",
        type=positive,
        metavar="MINUTES",
        help="time limit of each task, in minutes (a task stopped by it is requeued and resumes)",
    )
    group.add_argument("--slurm-cpus", type=positive, metavar="N", help="CPUs per task")
    group.add_argument(
        "--slurm-gpus", type=integer_at_least(0, "a count >= 0"), metavar="N", help="GPUs per task"
    )
    group.add_argument("--slurm-mem-gb", type=positive, metavar="GB", help="memory per task")
