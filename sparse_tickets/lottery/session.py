"""What the commands that train (``imp``, ``train``, ``instability``) share around the
experiment: the checks before a run directory is made, the run directory's one writer, the
progress this process shows, and the report at the end.

Under torchrun every process runs the same command: rank 0 alone holds the lock, shows
progress and writes the report (see :mod:`.distributed`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .. import models
from ..data import DatasetSplits
from ..nn import MaskedConv2d, masked_layers
from ..progress import LogLines, ProgressBars
from ..pruning import Masks, parse_nm
from . import distributed, locking
from .hparams import Hparams, HparamsError, parse_steps, validate_lengths
from .imp import LotteryRun
from .instability import InstabilityAnalysis
from .runs import Run
from .train import Schedule


class Silent(LogLines):
    """The progress of a rank other than 0 under torchrun: rank 0 shows the job's."""

    def message(self, text: str) -> None:
        pass

    def end_level(self, metrics: dict) -> None:
        pass


def progress_output(quiet: bool) -> LogLines:
    """What this process shows: bars, log lines with ``quiet``, nothing off rank 0."""
    if not distributed.is_main():
        return Silent()
    return LogLines() if quiet else ProgressBars()


def check_fits(hp: Hparams, schedule: Schedule, model: nn.Module, given: dict) -> None:
    """Raise HparamsError (one line) for hyperparameters that do not fit the model or the
    length of its data: lengths, pruning rates ``given`` (those not from the preset), N:M."""
    validate_lengths(hp, schedule.iterations_per_epoch)
    _check_rates_apply(given, hp.model, model)
    _check_nm_fits(hp, model)


def _check_rates_apply(given: dict, model_name: str, model: nn.Module) -> None:
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
            raise HparamsError(
                f"{flag} {given[field_name]} given, but {model_name} has no "
                f"{kind} layer to prune; expected no {flag} for this model"
            )


def _check_nm_fits(hp: Hparams, model: nn.Module) -> None:
    """An N:M group longer than every row of the model would only pad each row with zeros
    (a group of 10**20 cannot even be allocated)."""
    if not hp.nm:
        return
    pattern = parse_nm(hp.nm)
    longest = max(math.prod(layer.weight.shape[1:]) for _, layer in masked_layers(model))
    if pattern.m > longest:
        raise HparamsError(
            f"nm {hp.nm} groups {pattern.m} weights, more than the longest row "
            f"of {hp.model} ({longest} weights); expected m at most {longest}"
        )


@contextlib.contextmanager
def working_in(
    directory: Path | None,
    device: torch.device,
    *,
    quiet: bool,
    command: str = "",
    wait: bool = False,
    on_wait: Callable[[str], None] = lambda line: None,
) -> Iterator[LogLines]:
    """For the block: rank 0 (the job's one writer) holds ``directory``'s lock, taken before
    the other ranks are waited for; every rank is in the job's process group; the progress
    this process shows is given, and closed at the end, so that a bar cut short (Ctrl-C, an
    error) ends its line before the message that follows it."""
    lock = (
        locking.held(directory, command=command, wait=wait, on_wait=on_wait)
        if distributed.launched_rank() == 0
        else contextlib.nullcontext()
    )
    with lock, distributed.process_group(device):
        progress = progress_output(quiet)
        with contextlib.closing(progress):
            yield progress


def write_report(run: Run, progress: LogLines) -> None:
    """The run's report, in its report directory; each file written is named."""
    from .report import write_report as write

    for path in write([run.directory], run.report_directory):
        progress.message(f"wrote {path}")


def find_tickets(
    hp: Hparams,
    runs_directory: Path,
    splits: DatasetSplits,
    device: torch.device,
    checkpoint_every: int,
    progress: LogLines,
    report: bool,
    initial_masks: Masks | None = None,
    until_level: int | None = None,
) -> None:
    """Run (or resume) the levels and controls of ``hp`` (the main levels up to
    ``until_level`` when given); then, with ``report``, its report when the run did work or the
    report is not whole."""
    lottery = LotteryRun(
        hp,
        runs_directory,
        splits,
        device,
        checkpoint_every,
        progress,
        initial_masks=initial_masks,
        until_level=until_level,
    )
    run = lottery.run
    if distributed.active():
        processes = distributed.world_size()
        progress.message(
            f"{processes} processes ({distributed.backend_for(device)}), global "
            f"batch {hp.batch_size}, {hp.batch_size // processes} per process"
        )
    progress.message(f"run directory: {run.directory}")
    did_work = lottery.execute()
    if not distributed.is_main():
        return
    from .report import report_problem

    report_incomplete = report_problem(run.report_directory)
    if not did_work:
        progress.message(f"{run.directory} is already complete; nothing to do")
        if report and report_incomplete:
            progress.message(f"the report is not whole ({report_incomplete}); writing it again")
    if report and (did_work or report_incomplete):
        write_report(run, progress)
        progress.message((run.report_directory / "report.md").read_text())


def analyse_instability(
    run: Run,
    hp: Hparams,
    splits: DatasetSplits,
    device: torch.device,
    checkpoint_every: int,
    progress: LogLines,
    *,
    branch: str,
    level: int,
    iterations: Sequence[str] | None,
    points: int,
    report: bool,
) -> None:
    """The instability analyses of ``level`` of ``branch`` of ``run`` (of ``hp``), from each
    spawn iteration of ``iterations`` (in iterations or epochs; None: the level's start);
    then, with ``report``, the run's report."""
    lottery = LotteryRun(
        hp,
        run.directory.parent,
        splits,
        device,
        checkpoint_every,
        progress,
        run_directory=run.directory,
    )
    per_epoch = lottery.schedule.iterations_per_epoch
    spawns = (
        [parse_steps(text, per_epoch, "--iterations") for text in iterations]
        if iterations
        else [lottery.start_iteration(level)]
    )
    analysis = InstabilityAnalysis(lottery)
    analysis.check(branch, level, spawns, points)
    progress.message(f"run directory: {run.directory}")
    did_work = analysis.execute(branch, level, spawns, points)
    if not distributed.is_main():
        return
    if not did_work:
        progress.message("these analyses are already done; nothing to do")
    if report:
        write_report(run, progress)
