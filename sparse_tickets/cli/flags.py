"""The hyperparameter flags of ``imp`` and ``train``, as a run's hyperparameters."""

from __future__ import annotations

from ..lottery.hparams import Hparams, HparamsError
from ..lottery.presets import resolve
from .common import PROG, UsageError, usage_errors
from .options import flag_fields


def given(args) -> dict:
    """The hyperparameters given on the command line (the preset supplies the others)."""
    return {
        field.name: getattr(args, field.name)
        for field in flag_fields()
        if getattr(args, field.name) is not None
    }


def hparams(args) -> Hparams:
    """The run's hyperparameters: ``--preset`` (or the paper's for the model and dataset) with
    the flags given replacing its values."""
    values = given(args)
    if args.lr_rewind:
        if values.get("rewind", "lr") != "lr":
            raise UsageError(
                f"{PROG}: --lr-rewind and --rewind {values['rewind']} contradict "
                f"each other; expected one of them"
            )
        values["rewind"] = "lr"
    with usage_errors(HparamsError):
        return resolve(values, args.preset, scale_batch=args.scale_batch)
