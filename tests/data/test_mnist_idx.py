import gzip

import numpy as np
import pytest
import torch

from sparse_tickets.data import DatasetError, mnist

TRAIN_COUNT, TEST_COUNT = 6_000, 100
STANDARD = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DOTTED = {
    "train_images": "train-images.idx3-ubyte",
    "train_labels": "train-labels.idx1-ubyte",
    "test_images": "t10k-images.idx3-ubyte",
    "test_labels": "t10k-labels.idx1-ubyte",
}


@pytest.fixture
def arrays(indexed_images):
    return {
        "train_images": indexed_images(TRAIN_COUNT, (28, 28)),
        "train_labels": (np.arange(TRAIN_COUNT) % 10).astype(np.uint8),
        "test_images": indexed_images(TEST_COUNT, (28, 28)),
        "test_labels": (np.arange(TEST_COUNT) * 7 % 10).astype(np.uint8),
    }


@pytest.fixture
def write_mnist(write_idx, arrays):
    """Write the four files into a directory; ``replace`` swaps in other content per role."""

    def write(directory, names=STANDARD, suffix=".gz", **replace):
        directory.mkdir(parents=True, exist_ok=True)
        for role, name in names.items():
            write_idx(directory / f"{name}{suffix}", replace.get(role, arrays[role]))
        return directory

    return write


@pytest.mark.parametrize("names, suffix", [(STANDARD, ".gz"), (STANDARD, ""), (DOTTED, "")])
def test_reads_the_four_files_and_holds_out_5000(
    tmp_path, write_mnist, arrays, source_rows, names, suffix
):
    splits = mnist(write_mnist(tmp_path, names, suffix))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1_000, 5_000, TEST_COUNT)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert splits.train.images.dtype == torch.uint8
    assert splits.train.mean == (0.1307,) and splits.train.std == (0.3081,)
    # val is the documented rule: the first 5,000 of randperm(6000) with seed 0, in file order.
    permutation = torch.randperm(TRAIN_COUNT, generator=torch.Generator().manual_seed(0))
    val_rows = source_rows(splits.val.images)
    train_rows = source_rows(splits.train.images)
    assert val_rows.tolist() == sorted(permutation[:5_000].tolist())
    assert train_rows.tolist() == sorted(permutation[5_000:].tolist())
    # Every image arrives bit-exact with its own label.
    assert np.array_equal(splits.train.images[:, 0].numpy(), arrays["train_images"][train_rows])
    assert np.array_equal(splits.val.labels.numpy(), arrays["train_labels"][val_rows])
    assert np.array_equal(splits.test.images[:, 0].numpy(), arrays["test_images"])
    assert np.array_equal(splits.test.labels.numpy(), arrays["test_labels"])


def test_torchvision_layout_and_validation_size(tmp_path, write_mnist):
    write_mnist(tmp_path / "MNIST" / "raw")
    splits = mnist(tmp_path, validation_size=10)
    assert (len(splits.train), len(splits.val)) == (TRAIN_COUNT - 10, 10)


def test_same_split_every_time(tmp_path, write_mnist):
    directory = write_mnist(tmp_path)
    first = mnist(directory)
    torch.manual_seed(99)
    second = mnist(directory)
    assert torch.equal(first.val.images, second.val.images)
    assert torch.equal(first.train.labels, second.train.labels)


def test_root_is_required():
    with pytest.raises(ValueError, match="mnist needs a directory .*train-images-idx3-ubyte"):
        mnist(None)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist(tmp_path / "absent")


def test_missing_file(tmp_path, write_mnist):
    directory = write_mnist(tmp_path)
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no t10k-labels-idx1-ubyte\[\.gz\]"):
        mnist(directory)


def test_wrong_magic(tmp_path, write_mnist, arrays):
    directory = write_mnist(tmp_path, train_images=arrays["train_labels"])
    with pytest.raises(
        DatasetError,
        match=r"train-images-idx3-ubyte\.gz: magic number "
        r"0x00000801, expected 0x00000803",
    ):
        mnist(directory)


def test_truncated_images(tmp_path, write_mnist, write_idx):
    directory = write_mnist(tmp_path)
    path = directory / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as handle:
        whole = handle.read()
    write_idx(path, whole[:-100])
    with pytest.raises(
        DatasetError,
        match=r"train-images-idx3-ubyte\.gz: data truncated: "
        r"4703900 bytes after the header; expected 4704000",
    ):
        mnist(directory)


def test_count_mismatch(tmp_path, write_mnist, arrays):
    directory = write_mnist(tmp_path, test_labels=arrays["test_labels"][:-1])
    with pytest.raises(
        DatasetError,
        match=r"t10k-labels-idx1-ubyte\.gz: 99 labels; expected "
        r"one per image",
    ):
        mnist(directory)


def test_label_out_of_range(tmp_path, write_mnist, arrays):
    labels = arrays["train_labels"].copy()
    labels[17] = 10
    directory = write_mnist(tmp_path, train_labels=labels)
    with pytest.raises(DatasetError, match="label 10 at index 17; expected 0..9"):
        mnist(directory)


def test_test_images_of_another_size(tmp_path, write_mnist, indexed_images):
    directory = write_mnist(tmp_path, test_images=indexed_images(TEST_COUNT, (28, 27)))
    with pytest.raises(DatasetError, match="expected the training shape"):
        mnist(directory)


def test_validation_size_out_of_range(tmp_path, write_mnist):
    with pytest.raises(ValueError, match="validation_size 6000"):
        mnist(write_mnist(tmp_path), validation_size=TRAIN_COUNT)
