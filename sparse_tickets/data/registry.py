"""The datasets by name: a plain dict of :class:`DatasetSpec`, and :func:`load` to read one."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

from .cifar10_pickle import cifar10
from .mnist5k_csv import mnist5k
from .mnist_idx import mnist
from .splits import DatasetSplits
from .synthetic_images import synthetic

# Where a dataset's examples come from.
FILES = "files"  # the standard files, from a directory the user names (nothing is downloaded)
EMBEDDED = "embedded"  # shipped with an installed package
GENERATED = "generated"  # made on the spot, deterministically
SOURCES = (FILES, EMBEDDED, GENERATED)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its name, the function that loads it, where its examples come
    from (one of :data:`SOURCES`) and a few words on what it is.

    A dataset read from files takes the directory as its loader's first argument, ``root``.
    """

    name: str
    loader: Callable[..., DatasetSplits]
    source: str
    description: str

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(
                f"dataset {self.name!r} has source {self.source!r}; expected one "
                f"of {', '.join(SOURCES)}"
            )

    @property
    def reads_directory(self) -> bool:
        """Whether :func:`load` needs ``root``, the directory of the dataset's files."""
        return self.source == FILES

    @property
    def options(self) -> tuple[str, ...]:
        """The names of the keyword options the loader takes beyond ``root``."""
        return tuple(name for name in inspect.signature(self.loader).parameters if name != "root")


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", mnist, FILES, "IDX files"),
        DatasetSpec("cifar10", cifar10, FILES, "pickle batches"),
        DatasetSpec("mnist5k", mnist5k, EMBEDDED, "embedded, 5,000 digits"),
        DatasetSpec("synthetic", synthetic, GENERATED, "generated"),
    )
}


def names() -> list[str]:
    """The names :func:`load` knows, sorted."""
    return sorted(DATASETS)


def spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name``; ValueError listing the known names if
    none."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str; got {type(name).__name__}")
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(names())}")
    return DATASETS[name]


def load(name: str, root: str | os.PathLike | None = None, **options) -> DatasetSplits:
    """The dataset ``name`` with its train/val/test splits.

    ``root`` is the directory of a dataset read from files (``mnist``, ``cifar10``) and must be
    None for the others. ``options`` go to the dataset's loader (see :func:`mnist5k`,
    :func:`mnist`, :func:`cifar10`, :func:`synthetic` for what each accepts).
    """
    dataset = spec(name)
    unknown = sorted(set(options) - set(dataset.options))
    if unknown:
        raise TypeError(
            f"dataset {name!r} has no option {', '.join(unknown)}; expected "
            f"{', '.join(dataset.options) or 'no options'}"
        )
    if dataset.reads_directory:
        return dataset.loader(root, **options)
    if root is not None:
        raise ValueError(
            f"dataset {name!r} reads no directory, so root must be None; got root={root!r}"
        )
    return dataset.loader(**options)
