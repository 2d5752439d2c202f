"""``instability``: the run's hyperparameters, data and device, and the experiment's
:func:`~sparse_tickets.lottery.session.analyse_instability` to carry it out (or the same
command on each trial of the run's experiment)."""

from __future__ import annotations

from pathlib import Path

from ..compact.choice import default_mode_set_to
from ..lottery.datasets import DataChoiceError, load_splits
from ..lottery.runs import Run
from . import trials
from .common import usage_errors, working_options
from .devices import device as chosen_device


def run_instability(args) -> int:
    from ..lottery import session  # the training loop: not loaded for other commands

    run = Run.open(Path(args.run_dir))
    hp = run.hparams
    offsets = trials.seed_offsets(args)
    if offsets is not None:
        return trials.run_existing(args, run, offsets)
    with default_mode_set_to(args.mode):
        with usage_errors(DataChoiceError):
            splits = load_splits(hp, args.data_dir)
        device = chosen_device(args.device)
        with session.working_in(run.directory, device, **working_options(args)) as progress:
            session.analyse_instability(
                run,
                hp,
                splits,
                device,
                args.checkpoint_every,
                progress,
                branch=args.branch,
                level=args.level,
                iterations=args.iterations,
                points=args.points,
                report=args.report,
            )
        return 0
