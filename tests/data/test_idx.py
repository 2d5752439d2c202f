import numpy as np
import pytest

from sparse_tickets.data import DatasetError
from sparse_tickets.data.idx import UINT8_IMAGES_MAGIC, UINT8_LABELS_MAGIC, describe_magic, read_idx


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_uint8_images_round_trip(tmp_path, write_idx, name):
    images = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = write_idx(tmp_path / name, images)
    loaded = read_idx(path, UINT8_IMAGES_MAGIC)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, images)
    loaded[0, 0, 0] ^= 1  # the result is a writable copy


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_multibyte_types_come_back_in_native_order(tmp_path, write_idx, dtype):
    values = (np.arange(24).reshape(2, 3, 4) - 11).astype(dtype)
    loaded = read_idx(write_idx(tmp_path / "values.idx", values))
    assert loaded.dtype == np.dtype(dtype) and np.array_equal(loaded, values)


def test_wrong_magic_names_file_and_expectation(tmp_path, write_idx):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DatasetError) as caught:
        read_idx(path, UINT8_IMAGES_MAGIC)
    message = str(caught.value)
    assert message == (f"{path}: magic number 0x00000801, expected 0x00000803 (uint8, 3 dims)")


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"\x00\x00", "at least a 4-byte"),
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x05", "is not IDX"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "is not IDX"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05\x06", "data truncated: 2 bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", "trailing bytes"),
    ],
)
def test_malformed_files(tmp_path, write_idx, raw, words):
    path = write_idx(tmp_path / "bad-idx", raw)
    with pytest.raises(DatasetError, match=words):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path, write_idx):
    path = write_idx(tmp_path / "labels.gz", np.zeros(1000, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DatasetError, match="not a readable gzip file"):
        read_idx(path, UINT8_LABELS_MAGIC)


def test_plain_file_named_gz_is_rejected(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(DatasetError, match="gzip"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent.gz")


def test_describe_magic():
    assert describe_magic(UINT8_LABELS_MAGIC) == "uint8, 1 dims"
    assert describe_magic(0x00000D02) == "float32, 2 dims"


@pytest.mark.parametrize(
    "shape, data",
    [
        # 2**64 elements: numpy's int64 product wraps to 0, the size of no data at all.
        ((65536, 65536, 65536, 65536), b""),
        # 2 * 2**64 + 1 elements: the int64 product wraps to 1, the size of the one byte that
        # follows.
        ((7623851, 1119412321, 4323), b"\x07"),
    ],
)
def test_dimensions_multiplying_past_2_63_are_refused_naming_the_file(
    tmp_path, write_idx, shape, data
):
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
    path = write_idx(tmp_path / "train-images-idx3-ubyte", header + data)
    with pytest.raises(DatasetError) as caught:
        read_idx(path)
    message = str(caught.value)
    assert message.startswith(
        f"{path}: header dimensions {shape} (uint8, {len(shape)} dims) multiply to "
    )
    assert "past 2**63 bytes" in message and "\n" not in message


def test_a_large_promise_within_2_63_is_a_truncated_file(tmp_path, write_idx):
    path = write_idx(tmp_path / "labels", b"\x00\x00\x0e\x01\xff\xff\xff\xff\x00")
    with pytest.raises(
        DatasetError,
        match=f"data truncated: 1 bytes after the header; expected {(2**32 - 1) * 8} for shape",
    ):
        read_idx(path)
