"""``mnist``: the full MNIST set from the four standard IDX files in a local directory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetError
from .idx import UINT8_IMAGES_MAGIC, UINT8_LABELS_MAGIC, read_idx
from .partition import hold_out_validation
from .paths import existing_directory
from .splits import DatasetSplits, ImageSplit

# The usual constants: mean and std of the 60,000 training pixels on the [0, 1] scale.
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
NUM_CLASSES = 10
VALIDATION_SIZE = 5_000
SPLIT_SEED = 0

# Each file under its standard name and the dotted spelling some mirrors use; either may also
# carry a .gz suffix.
FILE_NAMES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
_REQUIRED = ", ".join(names[0] for names in FILE_NAMES.values()) + " (each plain or .gz)"


def mnist(root: str | os.PathLike | None, validation_size: int = VALIDATION_SIZE) -> DatasetSplits:
    """MNIST from the IDX files in ``root`` (or in torchvision's ``root/MNIST/raw``).

    ``root`` must hold train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte
    and t10k-labels-idx1-ubyte, each plain or gzipped, under these names or the dotted ones
    (train-images.idx3-ubyte); a plain file is read before its gzipped twin.

    Splits: test is the t10k set. ``validation_size`` training examples (5,000, as Frankle &
    Carbin hold out) form val: the first ``validation_size`` entries of
    ``torch.randperm(n_train, generator=torch.Generator().manual_seed(0))`` with ``n_train``
    the training file's count (60,000); train is the rest.
    Both keep file order. Normalisation: mean 0.1307, std 0.3081.
    """
    directory = _data_directory(root)
    paths = {role: _find_file(directory, names) for role, names in FILE_NAMES.items()}
    train = _read_split(paths["train_images"], paths["train_labels"])
    test = _read_split(paths["test_images"], paths["test_labels"])
    if train.image_shape != test.image_shape:
        raise DatasetError(
            paths["test_images"],
            f"images of shape {test.image_shape[1:]}; "
            f"expected the training shape "
            f"{train.image_shape[1:]}",
        )
    train, val = hold_out_validation(train, validation_size, SPLIT_SEED)
    return DatasetSplits("mnist", train, val, test, train.image_shape, NUM_CLASSES)


def _data_directory(root: str | os.PathLike | None) -> Path:
    root = existing_directory("mnist", root, _REQUIRED)
    torchvision_layout = root / "MNIST" / "raw"
    if (
        not _find_file(root, FILE_NAMES["train_images"], required=False)
        and torchvision_layout.is_dir()
    ):
        return torchvision_layout
    return root


def _find_file(directory: Path, names: tuple[str, ...], required: bool = True) -> Path | None:
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    if not required:
        return None
    spelled = " or ".join(f"{name}[.gz]" for name in names)
    raise FileNotFoundError(f"mnist directory {directory} has no {spelled}; expected {_REQUIRED}")


def _read_split(images_path: Path, labels_path: Path) -> ImageSplit:
    images = read_idx(images_path, UINT8_IMAGES_MAGIC)
    labels = read_idx(labels_path, UINT8_LABELS_MAGIC)
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DatasetError(
            images_path, f"images of shape {images.shape}; expected at least one non-empty image"
        )
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(
            labels_path,
            f"{labels.shape[0]} labels; expected one per image of "
            f"{images_path.name} ({images.shape[0]})",
        )
    if int(labels.max()) >= NUM_CLASSES:
        raise DatasetError(
            labels_path,
            f"label {int(labels.max())} at index "
            f"{int(np.argmax(labels >= NUM_CLASSES))}; expected "
            f"0..{NUM_CLASSES - 1}",
        )
    return ImageSplit(
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(labels).to(torch.int64),
        MNIST_MEAN,
        MNIST_STD,
    )
