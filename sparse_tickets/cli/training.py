"""``imp`` and ``train``: the hyperparameters, data and device of a run (or of its trials), and
the experiment's :func:`~sparse_tickets.lottery.session.find_tickets` to run it."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from ..compact.choice import default_mode_set_to
from ..lottery import distributed
from ..lottery.datasets import DataChoiceError, load_splits
from ..lottery.export import load_masks
from ..lottery.hparams import Hparams, HparamsError
from ..lottery.runs import Run
from . import trials
from .common import PROG, UsageError, usage_errors, working_options
from .devices import device as chosen_device
from .flags import given, hparams


def run_imp(args) -> int:
    return _execute(args, hparams(args))


def run_train(args) -> int:
    hp = hparams(args).replace(levels=0, controls="none", one_shot_density=None)
    masks = None
    if args.masks:
        path = Path(args.masks)
        if path.is_dir():
            raise UsageError(
                f"{PROG} train: masks file {path} is a directory; expected a "
                f".safetensors or .pt file of masks"
            )
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
        raise UsageError(
            f"{PROG} train: masks file {path} keeps no weight at all (every mask "
            f"is all False); expected masks that keep some weights"
        )
    empty = [name for name, count in kept.items() if count == 0]
    if empty and distributed.launched_rank() == 0:
        print(
            f"{PROG}: note: masks file {path} keeps no weight of {', '.join(empty)}: "
            f"{'that layer passes' if len(empty) == 1 else 'those layers pass'} nothing on",
            file=sys.stderr,
        )


def _execute(args, hp: Hparams, initial_masks=None) -> int:
    from ..lottery import session  # the training loop: not loaded for other commands
    from ..lottery.imp import check

    # --mode is not a hyperparameter: the modes compute the same numbers (up to rounding),
    # so a run may change mode between resumes and keeps its directory.
    with default_mode_set_to(args.mode):
        with usage_errors(DataChoiceError):
            splits = load_splits(hp, args.data_dir)
        device = chosen_device(args.device)
        # Everything that can be refused is refused before the run directory exists.
        schedule, model = check(hp, splits)
        with usage_errors(HparamsError):
            session.check_fits(hp, schedule, model, given(args))
        if initial_masks is not None:
            initial_masks.apply_to(model)  # names and shapes must be the model's
        offsets = trials.seed_offsets(args)
        if offsets is not None:
            start = trials.StackedStart(splits, device, initial_masks)
            return trials.run_new(args, hp, offsets, start)
        directory = None
        if distributed.launched_rank() == 0:  # the job's one writer
            directory = Run.make_directory(Path(args.runs_dir), hp).directory
            if args.name:
                Run(directory).record_name(args.name)
        with session.working_in(directory, device, **working_options(args)) as progress:
            session.find_tickets(
                hp,
                Path(args.runs_dir),
                splits,
                device,
                args.checkpoint_every,
                progress,
                args.report,
                initial_masks=initial_masks,
                until_level=getattr(args, "until_level", None),
            )
        return 0
