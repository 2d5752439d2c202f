"""A ticket as one file: its masks, the weights it starts from, and its trained weights.

The file is safetensors with three prefixes (``masks/``, ``start/``, ``trained/``) and the run's
hyperparameters, level, branch, input shape and class count as metadata, so
:func:`load_ticket` can rebuild the model without the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import safetensors.torch
from torch import nn

from .. import files, models
from .hparams import Hparams
from ..pruning import Masks
from .runs import Run, RunError

PARTS = ("masks", "start", "trained")


def export_ticket(run_directory: Path, level: int, branch: str = "main",
                  output: Optional[Path] = None) -> Path:
    """Write level ``level`` of ``branch`` of a finished run to ``output`` (default:
    ``RUN_DIR/ticket_<branch>_level_<L>.safetensors``); return the path."""
    run = Run.open(run_directory)
    level_files = run.level(branch, level)
    if not level_files.done():
        finished = sorted(run.finished_levels(branch))
        raise RunError(f"{run.directory} has no finished level {level} in branch {branch!r}; "
                       f"finished levels: {finished or 'none'}")
    tensors = {}
    for part, path in zip(PARTS, (level_files.masks, level_files.start, level_files.trained)):
        stored = files.read_tensors(path)
        if stored is None:
            raise RunError(f"{path} is missing or corrupted; rerun the run's command to redo it")
        tensors.update({f"{part}/{name}": tensor for name, tensor in stored.items()})
    shape = run.model_shape
    metadata = {"hparams": json.dumps(run.hparams.as_dict()), "level": str(level),
                "branch": branch, "input_shape": json.dumps(shape["input_shape"]),
                "num_classes": str(shape["num_classes"]),
                # Where training of the start weights begins: the learning-rate schedule
                # resumes here (K for rewinding to iteration K, else 0).
                "start_iteration": str(level_files.read_metrics()["start_iteration"])}
    output = Path(output) if output else run.directory / (
        f"ticket_{branch}_level_{level}.safetensors")
    if output.is_dir() or not output.name:
        raise ValueError(f"export output {output} is a directory; expected a file path")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"export output directory {output.parent} does not exist")
    files.write_atomically(output, lambda handle: handle.write(
        safetensors.torch.save(tensors, metadata=metadata)))
    return output


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
            return Masks({name.removeprefix("masks/"): tensor for name, tensor in
                          tensors.items() if name.startswith("masks/")})
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
        raise ValueError(f"{path} is not a ticket written by `sparse-tickets export` "
                         f"({str(error).splitlines()[0] if str(error) else type(error).__name__})"
                         ) from None
    options = {"dropout": hp.dropout} if hp.dropout else {}
    model = models.create(hp.model, input_shape=input_shape, num_classes=num_classes, **options)
    prefix = f"{weights}/"
    model.load_state_dict({name[len(prefix):]: t for name, t in tensors.items()
                           if name.startswith(prefix)})
    return model
