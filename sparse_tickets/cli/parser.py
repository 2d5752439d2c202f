"""The command line's parser: each command, its help and its options, and the function of
this package that carries it out (``args.handler``)."""

from __future__ import annotations

import argparse

from .. import __version__
from ..lottery.hparams import MAX_POINTS
from ..lottery.runs import BRANCHES
from . import instability, installation, options, results, training
from .common import PROG, UsageError

_BRANCH_HELP = "main (the ticket), reinit or random_pruning (default: main)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; one line is enough
        raise UsageError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Find lottery tickets by iterative magnitude pruning, on masked layers.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (
        _add_imp,
        _add_train,
        _add_instability,
        _add_report,
        _add_export,
        _add_runs,
        _add_build,
        _add_list,
    ):
        add(commands)
    return parser


def _add_imp(commands) -> None:
    command = commands.add_parser(
        "imp",
        help="find tickets: iterative magnitude pruning with rewinding and controls",
        description="Train, prune and rewind level after level; then the control branches; "
        "then a report. With no arguments: LeNet-300-100 on the embedded mnist5k "
        "digits, with the random-reinitialisation control. Rerunning the same "
        "command resumes an interrupted run.",
    )
    options.add_hparam_flags(command)
    options.add_run_options(command)
    command.add_argument(
        "--until-level",
        type=options.integer_at_least(0, "a level >= 0"),
        metavar="N",
        help="stop after main level N (the controls and analyses wait for every level); "
        "the same command without it goes on from there",
    )
    options.add_trial_options(command)
    command.set_defaults(handler=training.run_imp)


def _add_train(commands) -> None:
    command = commands.add_parser(
        "train",
        help="one training run, dense or with the masks of a saved file",
        description="Train once (level 0 only, no controls): dense, or with --masks from a "
        "ticket written by `export`, a level's masks.safetensors, or a file of "
        "Masks.save.",
    )
    command.add_argument(
        "--masks",
        type=options.path("a masks file"),
        help="a ticket or masks file (.safetensors or .pt) to train with",
    )
    options.add_hparam_flags(command)
    options.add_run_options(command)
    options.add_trial_options(command)
    command.set_defaults(handler=training.run_train)


def _add_instability(commands) -> None:
    command = commands.add_parser(
        "instability",
        help="instability analysis of a level: two copies from iteration K, "
        "the error along the linear path between them",
        description="From the weights a level of a run has at iteration K, train two copies "
        "with different data orders and evaluate the network along the linear "
        "path between them; report the error barrier (Frankle et al., ICML 2020, "
        "'Linear mode connectivity and the lottery ticket hypothesis'). The run's "
        "hyperparameters are used; rerunning resumes; the report is rewritten.",
    )
    command.add_argument("run_dir", metavar="RUN_DIR", type=options.path("a run directory"))
    command.add_argument(
        "--level", type=options.non_negative, required=True, help="the level to analyse"
    )
    command.add_argument("--branch", default="main", choices=BRANCHES, help=_BRANCH_HELP)
    command.add_argument(
        "--iterations",
        nargs="+",
        metavar="K",
        help="spawn iterations, in iterations (500) or epochs (2ep), each at "
        "least the level's start (default: the level's start iteration)",
    )
    command.add_argument(
        "--points",
        default=11,
        type=options.integer_at_least(2, "at least 2 points", MAX_POINTS),
        help="points on the linear path, ends included (default: 11)",
    )
    options.add_run_options(command, runs_dir=False)
    options.add_trial_options(command, named=False)
    command.set_defaults(handler=instability.run_instability)


def _add_report(commands) -> None:
    command = commands.add_parser(
        "report",
        help="tables and plots from run directories",
        description="Write accuracy and early-stop plots (PNG), report.md and summary.csv. "
        "Runs of one configuration with different seeds are averaged.",
    )
    command.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", type=options.path("a run directory")
    )
    command.add_argument(
        "--output",
        type=options.path("a directory"),
        help="output directory (default: RUN_DIR/report for one run, ./report for several)",
    )
    command.set_defaults(handler=results.run_report)


def _add_export(commands) -> None:
    command = commands.add_parser(
        "export",
        help="write a ticket (masks, weights at the rewind point and trained)",
        description="Write one level's ticket as safetensors: masks, the weights it started "
        "from and the trained weights, with the hyperparameters as metadata. "
        "Load it back with sparse_tickets.lottery.export.load_ticket.",
    )
    command.add_argument("run_dir", metavar="RUN_DIR", type=options.path("a run directory"))
    command.add_argument(
        "--level", type=options.non_negative, required=True, help="the level to export"
    )
    command.add_argument("--branch", default="main", choices=BRANCHES, help=_BRANCH_HELP)
    command.add_argument(
        "--output",
        type=options.path("a file path"),
        help="file to write (default: RUN_DIR/ticket_<branch>_level_<L>.safetensors)",
    )
    command.set_defaults(handler=results.run_export)


def _add_runs(commands) -> None:
    command = commands.add_parser(
        "runs",
        help="list the runs under a directory: name, configuration, state, progress",
        description="List every run directory under DIRECTORY (default: ./runs) with its "
        "name, model and dataset, seeds, the settings in which the runs differ, "
        "its state (done, stopped, running, diverged) and levels done per "
        "branch. Reads files only: safe while runs train.",
    )
    command.add_argument("directory", nargs="?", default="runs", metavar="DIRECTORY")
    command.set_defaults(handler=results.run_runs)


def _add_build(commands) -> None:
    command = commands.add_parser(
        "build",
        help="build the compiled kernels now, instead of on first use",
        description="Build (or find cached) the C++ extension, and the CUDA extension where "
        "nvcc and a CUDA build of torch exist; then list the backends. A build "
        "that failed before (remembered per compiler and kernel sources, so that "
        "other commands do not retry it) is tried again.",
    )
    command.set_defaults(handler=installation.run_build)


def _add_list(commands) -> None:
    command = commands.add_parser(
        "list",
        help="models, datasets, presets and backends",
        description="List what can be named on the command line.",
    )
    command.set_defaults(handler=installation.run_list)
