import pickle

import numpy as np
import pytest
import torch

from sparse_tickets.data import DatasetError, cifar10

ROWS_PER_BATCH, TEST_ROWS = 1_100, 50
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]


@pytest.fixture
def train_images(indexed_images):
    return indexed_images(5 * ROWS_PER_BATCH, (3072,))


@pytest.fixture
def write_cifar(write_cifar_batch, train_images, indexed_images):
    def write(directory):
        directory.mkdir(parents=True, exist_ok=True)
        for number, name in enumerate(TRAIN_FILES):
            rows = slice(number * ROWS_PER_BATCH, (number + 1) * ROWS_PER_BATCH)
            write_cifar_batch(directory / name, train_images[rows],
                              np.arange(rows.start, rows.stop) % 10)
        write_cifar_batch(directory / "test_batch", indexed_images(TEST_ROWS, (3072,)),
                          np.arange(TEST_ROWS) % 10)
        return directory
    return write


@pytest.mark.parametrize("nested", [False, True])
def test_reads_batches_and_holds_out_5000(tmp_path, write_cifar, train_images, source_rows,
                                          nested):
    write_cifar(tmp_path / "cifar-10-batches-py")
    splits = cifar10(tmp_path if nested else tmp_path / "cifar-10-batches-py")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (500, 5_000, TEST_ROWS)
    assert splits.input_shape == (3, 32, 32) and splits.num_classes == 10
    assert splits.train.mean == (0.4914, 0.4822, 0.4465)
    assert splits.train.std == (0.2470, 0.2435, 0.2616)
    permutation = torch.randperm(5 * ROWS_PER_BATCH, generator=torch.Generator().manual_seed(0))
    val_rows = source_rows(splits.val.images)
    assert val_rows.tolist() == sorted(permutation[:5_000].tolist())
    assert splits.val.labels.tolist() == (val_rows % 10).tolist()
    # Rows are channel-major RGB: value 1024 * c + 32 * y + x is channel c, pixel (y, x).
    train_rows = source_rows(splits.train.images)
    source = train_images[train_rows]
    assert splits.train.images.dtype == torch.uint8
    assert int(splits.train.images[3, 2, 5, 7]) == int(source[3, 1024 * 2 + 32 * 5 + 7])
    assert np.array_equal(splits.train.images.numpy().reshape(len(train_rows), -1), source)


def test_validation_size_option(tmp_path, write_cifar):
    splits = cifar10(write_cifar(tmp_path), validation_size=100)
    assert (len(splits.train), len(splits.val)) == (5 * ROWS_PER_BATCH - 100, 100)


def test_str_keys_are_accepted(tmp_path, write_cifar):
    directory = write_cifar(tmp_path)
    with open(directory / "test_batch", "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    with open(directory / "test_batch", "wb") as handle:
        pickle.dump({key.decode(): value for key, value in batch.items()}, handle)
    assert len(cifar10(directory).test) == TEST_ROWS


def test_root_is_required():
    with pytest.raises(ValueError, match="cifar10 needs a directory .*data_batch_1"):
        cifar10(None)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cifar10(tmp_path / "absent")


def test_missing_file(tmp_path, write_cifar):
    directory = write_cifar(tmp_path / "cifar-10-batches-py")
    (directory / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="lacks data_batch_4"):
        cifar10(tmp_path)


def _rewrite(path, changes):
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    batch.update(changes)
    for key in [key for key, value in changes.items() if value is None]:
        del batch[key]
    with open(path, "wb") as handle:
        pickle.dump(batch, handle)


@pytest.mark.parametrize("changes, words", [
    ({b"data": None}, r"no b'data' key \(keys: b'batch_label', b'labels'\)"),
    ({b"labels": None}, "no b'labels' key"),
    ({b"data": np.zeros((TEST_ROWS, 3071), dtype=np.uint8)}, r"shape \(rows, 3072\)"),
    ({b"data": np.zeros((TEST_ROWS, 3072), dtype=np.float32)}, "expected a uint8 array"),
    ({b"labels": list(range(TEST_ROWS - 1))}, "49 labels for 50 images"),
    ({b"labels": [10] * TEST_ROWS}, r"labels span 10..10; expected 0..9"),
    ({b"labels": ["cat"] * TEST_ROWS}, "expected a list of ints"),
])
def test_malformed_batch(tmp_path, write_cifar, changes, words):
    directory = write_cifar(tmp_path)
    _rewrite(directory / "test_batch", changes)
    with pytest.raises(DatasetError, match=rf"test_batch: .*{words}"):
        cifar10(directory)


def test_not_a_pickle(tmp_path, write_cifar):
    directory = write_cifar(tmp_path)
    (directory / "data_batch_2").write_bytes(b"this is no pickle")
    with pytest.raises(DatasetError, match="data_batch_2: not a readable pickle"):
        cifar10(directory)


def test_pickle_of_the_wrong_type(tmp_path, write_cifar):
    directory = write_cifar(tmp_path)
    with open(directory / "data_batch_1", "wb") as handle:
        pickle.dump([1, 2, 3], handle)
    with pytest.raises(DatasetError, match="data_batch_1: pickle holds a list; expected a dict"):
        cifar10(directory)
