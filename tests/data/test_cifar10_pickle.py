import os
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
            write_cifar_batch(
                directory / name, train_images[rows], np.arange(rows.start, rows.stop) % 10
            )
        write_cifar_batch(
            directory / "test_batch", indexed_images(TEST_ROWS, (3072,)), np.arange(TEST_ROWS) % 10
        )
        return directory

    return write


@pytest.mark.parametrize("nested", [False, True])
def test_reads_batches_and_holds_out_5000(tmp_path, write_cifar, train_images, source_rows, nested):
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


@pytest.mark.parametrize(
    "changes, words",
    [
        ({b"data": None}, r"no b'data' key \(keys: b'batch_label', b'labels'\)"),
        ({b"labels": None}, "no b'labels' key"),
        ({b"data": np.zeros((TEST_ROWS, 3071), dtype=np.uint8)}, r"shape \(rows, 3072\)"),
        ({b"data": np.zeros((TEST_ROWS, 3072), dtype=np.float32)}, "expected a uint8 array"),
        ({b"labels": list(range(TEST_ROWS - 1))}, "49 labels for 50 images"),
        ({b"labels": [10] * TEST_ROWS}, r"labels span 10..10; expected 0..9"),
        ({b"labels": ["cat"] * TEST_ROWS}, "expected a list of ints"),
    ],
)
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


class _RunsCode:
    """Unpickles by calling os.system: what a crafted batch file could do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("where", ["the whole file", "the data entry", "inside the labels"])
def test_a_crafted_pickle_that_would_run_code_is_refused_before_anything_runs(
    tmp_path, write_cifar, where
):
    directory = write_cifar(tmp_path / "batches")
    marker = tmp_path / "marker"
    payload = _RunsCode(f"touch {marker}")
    batch = {
        "the whole file": payload,
        "the data entry": {b"data": payload, b"labels": [0]},
        "inside the labels": {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0, payload]},
    }[where]
    crafted = pickle.dumps(batch, protocol=2)
    with open(directory / "data_batch_3", "wb") as handle:
        handle.write(crafted)
    with pytest.raises(DatasetError) as refused:
        cifar10(directory)
    message = str(refused.value)
    assert message.startswith(f"{directory / 'data_batch_3'}: refused: it names ")
    assert f"{os.system.__module__}.system, which a CIFAR-10 batch never holds" in message
    assert "\n" not in message
    assert not marker.exists()
    # The file is live: an ordinary unpickler runs its command.
    pickle.loads(crafted)
    assert marker.exists()


def test_other_globals_and_codecs_are_refused(tmp_path, write_cifar):
    directory = write_cifar(tmp_path)
    # GLOBAL 'builtins eval', then eval("1"): a protocol-0 call an attacker could write.
    (directory / "data_batch_1").write_bytes(b"cbuiltins\neval\n(V1\ntR.")
    with pytest.raises(DatasetError, match=r"data_batch_1: refused: it names builtins\.eval"):
        cifar10(directory)
    # _codecs.encode is let through for latin1 bytes only.
    (directory / "data_batch_1").write_bytes(b"c_codecs\nencode\n(Vx\nVrot13\ntR.")
    with pytest.raises(
        DatasetError, match="refused: _codecs.encode with 'rot13'; expected latin1 only"
    ):
        cifar10(directory)


def test_batches_naming_numpy_1_modules_still_load(tmp_path, write_cifar):
    # The official files, pickled under numpy 1, name numpy.core.multiarray; numpy 2 writes
    # numpy._core.multiarray. Both are array reconstruction and load.
    directory = write_cifar(tmp_path)
    for name in ("data_batch_2", "test_batch"):
        path = directory / name
        data = path.read_bytes()
        assert b"numpy._core.multiarray" in data or b"numpy.core.multiarray" in data
        path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert len(cifar10(directory).test) == TEST_ROWS


def test_a_file_given_as_the_directory_is_not_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="cifar10 directory .*file is not a directory"):
        cifar10(tmp_path / "file")
