"""The data a run trains on, from its hyperparameters: which dataset, which examples.

- A dataset read from files (:data:`~sparse_tickets.data.registry.FILES`) needs the directory
  that holds them; the others are refused one, so a mistyped dataset name does not pass
  silently.
- ``synthetic`` is one fixed set (seed :data:`SYNTHETIC_SEED`) of the model's input shape:
  ``train_size`` examples (:data:`SYNTHETIC_TRAIN_SIZE` by default), validation and test sets
  a fifth of that each, within :data:`SYNTHETIC_HELD_OUT`.
- ``train_size`` of any other dataset keeps a fixed random subset (seed :data:`SUBSET_SEED`) of
  its training set.

Both are fixed, not drawn from the run's data seed: runs that differ only in their data seed
see the same examples, in another order.
"""

from __future__ import annotations

import os

import torch

from .. import data, models
from ..data import DatasetSplits
from .hparams import Hparams

SYNTHETIC_TRAIN_SIZE = 5000
SYNTHETIC_HELD_OUT = (100, 1000)  # the fewest and most validation (and test) examples
SYNTHETIC_SEED = 0
SUBSET_SEED = 0


class DataChoiceError(ValueError):
    """A dataset and a data directory or training-set size that do not go together."""


def load_splits(hp: Hparams, data_dir: str | os.PathLike | None) -> DatasetSplits:
    """The splits ``hp`` trains on; ``data_dir`` is the directory of a dataset read from files
    (``--data-dir``), None for the others."""
    reads_directory = check_data_dir(hp.dataset, data_dir)
    if hp.dataset == "synthetic":
        return data.load(
            "synthetic",
            input_shape=models.spec(hp.model).default_input_shape,
            **synthetic_sizes(hp.train_size),
            seed=SYNTHETIC_SEED,
        )
    splits = data.load(hp.dataset, root=data_dir if reads_directory else None)
    return training_subset(splits, hp.train_size) if hp.train_size else splits


def check_data_dir(dataset: str, data_dir: str | os.PathLike | None) -> bool:
    """Whether ``dataset`` reads ``data_dir``; DataChoiceError when it needs one and has none,
    or has one and reads none."""
    spec = data.spec(dataset)
    if spec.reads_directory and not data_dir:
        raise DataChoiceError(
            f"dataset {dataset} is read from its standard files: pass "
            f"--data-dir DIR (nothing is downloaded)"
        )
    if data_dir and not spec.reads_directory:
        readers = " and ".join(
            name for name, other in data.DATASETS.items() if other.reads_directory
        )
        raise DataChoiceError(
            f"dataset {dataset} is {spec.source} and reads no directory, but "
            f"--data-dir {data_dir} was given; expected no --data-dir (the "
            f"{readers} datasets read one)"
        )
    return spec.reads_directory


def synthetic_sizes(train_size: int) -> dict:
    """The sizes of the synthetic splits for ``train_size`` (0: the default)."""
    train_size = train_size or SYNTHETIC_TRAIN_SIZE
    fewest, most = SYNTHETIC_HELD_OUT
    held_out = min(most, max(fewest, train_size // 5))
    return {"train_size": train_size, "val_size": held_out, "test_size": held_out}


def training_subset(splits: DatasetSplits, size: int) -> DatasetSplits:
    """``splits`` with ``size`` training examples, a fixed random subset; the validation and
    test sets are whole."""
    if size > len(splits.train):
        raise DataChoiceError(
            f"train_size is {size}; {splits.name} has {len(splits.train)} training examples"
        )
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    order = torch.randperm(len(splits.train), generator=generator)
    return DatasetSplits(
        splits.name,
        splits.train.subset(order[:size]),
        splits.val,
        splits.test,
        splits.input_shape,
        splits.num_classes,
    )
