"""File writers shared by the dataset tests: the exact IDX and CIFAR-10 pickle formats."""

import gzip
import pickle

import numpy as np
import pytest

# numpy dtype -> IDX dtype code.
IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` in IDX: magic 0x0000<code><ndim>, big-endian int32 dims, big-endian data."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def write_idx():
    """Write an array (or raw bytes) as an IDX file, gzipped when the name ends in .gz."""

    def write(path, content):
        raw = content if isinstance(content, bytes) else idx_bytes(content)
        if str(path).endswith(".gz"):
            with gzip.open(path, "wb") as handle:
                handle.write(raw)
        else:
            path.write_bytes(raw)
        return path

    return write


@pytest.fixture
def write_cifar_batch():
    """Pickle a dict as the official CIFAR-10 batches are: bytes keys, a list of labels."""

    def write(path, data, labels, **extra):
        batch = {
            b"batch_label": b"testing batch",
            b"data": data,
            b"labels": [int(label) for label in labels],
            **extra,
        }
        with open(path, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
        return path

    return write


@pytest.fixture
def indexed_images():
    """uint8 images whose first two values spell their index (high byte, low byte), so a test
    can tell which source row every loaded image came from."""

    def make(count: int, shape: tuple) -> np.ndarray:
        rng = np.random.default_rng(count)
        images = rng.integers(0, 256, size=(count, int(np.prod(shape))), dtype=np.uint8)
        images[:, 0] = np.arange(count) // 256
        images[:, 1] = np.arange(count) % 256
        return images.reshape(count, *shape)

    return make


@pytest.fixture
def source_rows():
    """The source indices spelled by ``indexed_images`` in loaded (N, ...) images."""

    def rows(images) -> np.ndarray:
        flat = np.asarray(images).reshape(len(images), -1).astype(np.int64)
        return flat[:, 0] * 256 + flat[:, 1]

    return rows
