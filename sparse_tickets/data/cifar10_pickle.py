"""``cifar10``: CIFAR-10 from the official python-pickle batches in a local directory."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetError
from .partition import hold_out_validation
from .paths import existing_directory
from .splits import DatasetSplits, ImageSplit

# The usual constants: per-channel mean and std of the 50,000 training images on [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
VALIDATION_SIZE = 5_000
SPLIT_SEED = 0
BATCHES_DIRECTORY = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
_REQUIRED = f"{', '.join(TRAIN_FILES)} and {TEST_FILE}"


def cifar10(
    root: str | os.PathLike | None, validation_size: int = VALIDATION_SIZE
) -> DatasetSplits:
    """CIFAR-10 from ``root``: the ``cifar-10-batches-py`` directory itself or its parent.

    The directory holds data_batch_1 .. data_batch_5 and test_batch, each a pickled dict with
    ``b'data'``, a (rows, 3072) uint8 array of channel-major RGB images, and ``b'labels'``, a
    list of ints 0..9. They are read by a restricted unpickler that builds only what those files
    hold (dicts, lists, bytes, str, numbers and numpy arrays): a file that names anything else,
    as a crafted pickle that would run code does, is refused in one line before anything runs.

    Splits: test is test_batch. ``validation_size`` training examples (5,000) form val: the
    first ``validation_size`` entries of ``torch.randperm(n_train,
    generator=torch.Generator().manual_seed(0))`` over the five batches concatenated in order;
    train is the rest. Both keep file order. Normalisation: per-channel mean
    (0.4914, 0.4822, 0.4465) and std (0.2470, 0.2435, 0.2616).
    """
    directory = _batches_directory(root)
    train_images, train_labels = zip(*(_read_batch(directory / name) for name in TRAIN_FILES))
    train = _split(np.concatenate(train_images), np.concatenate(train_labels))
    test = _split(*_read_batch(directory / TEST_FILE))
    train, val = hold_out_validation(train, validation_size, SPLIT_SEED)
    return DatasetSplits("cifar10", train, val, test, IMAGE_SHAPE, NUM_CLASSES)


def _batches_directory(root: str | os.PathLike | None) -> Path:
    root = existing_directory("cifar10", root, f"{_REQUIRED} ({BATCHES_DIRECTORY} or its parent)")
    nested = root / BATCHES_DIRECTORY
    directory = nested if not (root / TEST_FILE).is_file() and nested.is_dir() else root
    missing = [name for name in TRAIN_FILES + (TEST_FILE,) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"cifar10 directory {directory} lacks {', '.join(missing)}; expected {_REQUIRED}"
        )
    return directory


class UnsafePickle(pickle.UnpicklingError):
    """A pickle that names something a CIFAR-10 batch never holds."""


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:
        from numpy.core import multiarray  # numpy 1
    return multiarray


def _latin1_encode(text, encoding="utf-8", *rest):
    # Python 3 pickles bytes at protocol 2 as _codecs.encode(text, "latin1"); no other codec
    # is needed, and none other is let through.
    if encoding not in ("latin1", "latin-1") or rest or not isinstance(text, str):
        raise UnsafePickle(f"_codecs.encode with {encoding!r}; expected latin1 only")
    return text.encode("latin1")


# Everything the official batches (Python 2 pickles of numpy arrays) and re-pickled copies of
# them name: numpy's array reconstruction and bytes. Data itself (dicts, lists, str, bytes,
# ints) needs no global at all.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_multiarray()._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_multiarray()._reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only the globals in :data:`_ALLOWED`."""

    def find_class(self, module: str, name: str):
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickle(f"it names {module}.{name}, which a CIFAR-10 batch never holds")
        return allowed()


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as uint8 images (rows, 3, 32, 32) and uint8 labels (rows,)."""
    try:
        with open(path, "rb") as handle:
            batch = _BatchUnpickler(handle, encoding="bytes").load()
    except OSError:
        raise
    except UnsafePickle as error:
        raise DatasetError(
            path,
            f"refused: {error}; expected only the dicts, lists, bytes and "
            f"numpy arrays of a CIFAR-10 batch (a crafted pickle can run "
            f"code)",
        ) from None
    except Exception as error:
        # A damaged or foreign pickle can fail in almost any way (UnpicklingError, EOFError,
        # KeyError, ImportError, ...); all of them mean the same thing to the user.
        raise DatasetError(
            path,
            f"not a readable pickle ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); "
            f"expected a CIFAR-10 batch",
        ) from None
    if not isinstance(batch, dict):
        raise DatasetError(
            path,
            f"pickle holds a {type(batch).__name__}; expected a dict with b'data' and b'labels'",
        )
    data, labels = _entry(batch, "data", path), _entry(batch, "labels", path)
    row_size = int(np.prod(IMAGE_SHAPE))
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != row_size
    ):
        raise DatasetError(
            path,
            f"b'data' is {_describe(data)}; expected a uint8 array of shape (rows, {row_size})",
        )
    try:
        labels = np.asarray(labels)
    except (TypeError, ValueError):
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetError(path, f"b'labels' is {_describe(labels)}; expected a list of ints")
    if labels.shape[0] != data.shape[0]:
        raise DatasetError(
            path,
            f"{labels.shape[0]} labels for {data.shape[0]} images; expected one label per image",
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetError(
            path, f"labels span {labels.min()}..{labels.max()}; expected 0..{NUM_CLASSES - 1}"
        )
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.uint8)


def _entry(batch: dict, key: str, path: Path):
    # The official files were pickled by Python 2, so their keys load as bytes; accept a
    # re-pickled copy whose keys are str as well.
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    found = ", ".join(repr(k) for k in list(batch)[:6]) or "none"
    raise DatasetError(
        path, f"no {key.encode()!r} key (keys: {found}); expected b'data' and b'labels'"
    )


def _split(images: np.ndarray, labels: np.ndarray) -> ImageSplit:
    return ImageSplit(
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(labels).to(torch.int64),
        CIFAR10_MEAN,
        CIFAR10_STD,
    )


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"a {type(value).__name__}"
