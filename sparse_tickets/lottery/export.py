"""A ticket as one file: its masks, the weights it starts from, and its trained weights.

The file is safetensors with three prefixes (``masks/``, ``start/``, ``trained/``) and the run's
hyperparameters, level, branch, input shape and class count as metadata, so
:func:`load_ticket` can rebuild the model without the run directory.

Only a level that finished without diverging is exported, and only after its files are checked
against the model the run describes (:mod:`.artifacts`): masks that fit it (a subset of the
level before's, on the main branch), finite weights that are zero where pruned, metrics that
agree with the masks. A file that fails is named, for the user to delete and redo.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
from torch import nn

from .. import files, models
from ..pruning import Masks
from .artifacts import (
    Reference,
    divergence_of,
    masks_relation_problem,
    metrics_problem,
    read_checked,
)
from .hparams import Hparams
from .runs import MAIN, MODEL_SHAPE, BadArtifact, Level, Run, RunError, redo_remedy

PARTS = ("masks", "start", "trained")


def export_ticket(
    run_directory: Path, level: int, branch: str = "main", output: Path | None = None
) -> Path:
    """Write level ``level`` of ``branch`` of a finished run to ``output`` (default:
    ``RUN_DIR/ticket_<branch>_level_<L>.safetensors``); return the path."""
    run = Run.open(run_directory)
    level_files = run.level(branch, level)
    metrics = _finished_metrics(run, branch, level)
    reference = Reference(_model_of(run))
    remedy = redo_remedy(level_files)
    masks = _checked_masks(run, branch, level, reference)
    problem = metrics_problem(metrics, masks=masks)
    if problem:
        raise BadArtifact(level_files.masks, problem, remedy)
    tensors = {f"masks/{name}": mask for name, mask in masks.items()}
    for part, path in (("start", level_files.start), ("trained", level_files.trained)):
        stored = read_checked(
            path, files.read_tensors, lambda state: reference.state_problem(state, masks), remedy
        )
        tensors.update({f"{part}/{name}": tensor for name, tensor in stored.items()})
    shape = run.model_shape
    metadata = {
        "hparams": json.dumps(run.hparams.as_dict()),
        "level": str(level),
        "branch": branch,
        "input_shape": json.dumps(shape["input_shape"]),
        "num_classes": str(shape["num_classes"]),
        # Where training of the start weights begins: the learning-rate schedule
        # resumes here (K for rewinding to iteration K, else 0).
        "start_iteration": str(metrics["start_iteration"]),
    }
    output = (
        Path(output) if output else run.directory / (f"ticket_{branch}_level_{level}.safetensors")
    )
    if output.is_dir() or not output.name:
        raise ValueError(f"export output {output} is a directory; expected a file path")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"export output directory {output.parent} does not exist")
    files.write_atomically(
        output, lambda handle: handle.write(safetensors.torch.save(tensors, metadata=metadata))
    )
    return output


def _finished_metrics(run: Run, branch: str, level: int) -> dict:
    """The checked metrics of a level that finished without diverging; else a one-line error
    saying why there is no ticket (not trained, a file missing, diverged)."""
    level_files = run.level(branch, level)
    metrics = level_files.read_metrics()
    if metrics is None:
        finished = sorted(
            number for number in run.finished_levels(branch) if run.level(branch, number).done()
        )
        raise RunError(
            f"{run.directory} has no finished level {level} in branch {branch!r}; "
            f"finished levels: {finished or 'none'}"
        )
    problem = metrics_problem(metrics, level_files)
    if problem:
        raise BadArtifact(level_files.metrics, problem, redo_remedy(level_files))
    divergence = divergence_of(metrics)
    if divergence is not None:
        raise RunError(
            f"{branch} level {level} of {run.directory} diverged at iteration "
            f"{divergence['iteration']} ({divergence['cause']}): it has no ticket to "
            f"export; rerun with a lower --lr"
        )
    missing = level_files.missing()
    if missing:
        raise RunError(
            f"{branch} level {level} of {run.directory} is not whole: "
            f"{', '.join(path.name for path in missing)} missing or not matching "
            f"its .sha256; run the run's command again to redo the level"
        )
    return metrics


def _model_of(run: Run) -> nn.Module:
    """The run's model, built from its hparams.json and model.json (for shapes only)."""
    hp, shape = run.hparams, run.model_shape
    options = {"dropout": hp.dropout} if hp.dropout else {}
    try:
        return models.create(
            hp.model,
            input_shape=tuple(shape["input_shape"]),
            num_classes=shape["num_classes"],
            **options,
        )
    except (TypeError, ValueError) as error:
        raise BadArtifact(
            run.directory / MODEL_SHAPE,
            f"does not fit model {hp.model} ({str(error).splitlines()[0]})",
            "delete it and rerun the run's command (it is written again from the data)",
        ) from None


def _checked_masks(run: Run, branch: str, level: int, reference: Reference) -> Masks:
    """The level's masks, checked against the model and, on the main branch, against the
    level before's."""
    files_of = run.level(branch, level)
    previous = None
    if branch == MAIN and level > 0:
        previous = _stored_masks(run.level(MAIN, level - 1), reference)

    def problem(stored: dict):
        return (
            reference.masks_problem(stored)
            or (previous is not None and masks_relation_problem(Masks(stored), previous))
            or None
        )

    return Masks(read_checked(files_of.masks, files.read_tensors, problem, redo_remedy(files_of)))


def _stored_masks(files_of: Level, reference: Reference):
    """A level's masks when stored and sound, else None (nothing to compare with)."""
    try:
        stored = files.read_tensors(files_of.masks)
    except files.DamagedArtifact:
        return None
    if stored is None or reference.masks_problem(stored):
        return None
    return Masks(stored)


def load_masks(path: Path) -> Masks:
    """The masks of an exported ticket, or of a masks file (``Masks.save``, a level's
    ``masks.safetensors``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            with safetensors.safe_open(str(path), framework="pt") as handle:
                names = list(handle.keys())
        except Exception:  # not safetensors at all: Masks.load says so in its own words
            names = []
        if any(name.startswith("masks/") for name in names):
            tensors = safetensors.torch.load_file(str(path))
            return Masks(
                {
                    name.removeprefix("masks/"): tensor
                    for name, tensor in tensors.items()
                    if name.startswith("masks/")
                }
            )
    return Masks.load(path)


def load_ticket(path: Path, weights: str = "start") -> nn.Module:
    """The model of an exported ticket with its masks and the ``start`` (rewound, ready to
    train) or ``trained`` weights."""
    if weights not in ("start", "trained"):
        raise ValueError(f"weights is {weights!r}; expected 'start' or 'trained'")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ticket file at {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = safetensors.torch.load_file(str(path))
        hp = Hparams.from_dict(json.loads(metadata["hparams"]))
        input_shape = tuple(json.loads(metadata["input_shape"]))
        num_classes = int(metadata["num_classes"])
    except Exception as error:  # any failure to parse means the same: not our ticket file
        raise ValueError(
            f"{path} is not a ticket written by `sparse-tickets export` "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__})"
        ) from None
    options = {"dropout": hp.dropout} if hp.dropout else {}
    model = models.create(hp.model, input_shape=input_shape, num_classes=num_classes, **options)
    prefix = f"{weights}/"
    model.load_state_dict(
        {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}
    )
    return model
