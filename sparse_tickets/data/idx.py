"""Reader for the IDX format of the MNIST files (plain or gzipped).

An IDX file is a 4-byte big-endian magic number, then one big-endian int32 per dimension, then
the data in C order. The magic is ``0x00 0x00 <dtype code> <number of dims>``, so MNIST's uint8
3-D images are ``0x00000803`` and its uint8 1-D labels ``0x00000801``.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

from .errors import DatasetError

UINT8_IMAGES_MAGIC = 0x00000803
UINT8_LABELS_MAGIC = 0x00000801
# No array (numpy's sizes are int64) or file can be larger.
_MAX_BYTES = 2**63 - 1

# IDX dtype code -> numpy dtype; multi-byte types are stored big-endian.
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def describe_magic(magic: int) -> str:
    """What an IDX magic number announces, e.g. ``"uint8, 3 dims"``."""
    code, dims = (magic >> 8) & 0xFF, magic & 0xFF
    dtype = _DTYPES.get(code)
    kind = dtype.newbyteorder("=").name if dtype is not None else f"unknown dtype 0x{code:02X}"
    return f"{kind}, {dims} dims"


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzipped when its name ends in ``.gz``).

    Raises :class:`DatasetError` naming the file when the magic number is malformed or differs
    from ``expected_magic``, or when the data is shorter or longer than the dimensions promise.
    The array is a writable copy in native byte order.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(path, f"{len(raw)} bytes; expected at least a 4-byte IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DatasetError(
            path,
            f"magic number 0x{magic:08X}, expected 0x{expected_magic:08X} "
            f"({describe_magic(expected_magic)})",
        )
    code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or code not in _DTYPES or ndim == 0:
        raise DatasetError(
            path,
            f"magic number 0x{magic:08X} is not IDX; expected 0x0000<dtype code><number of dims>",
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetError(
            path,
            f"header truncated at {len(raw)} bytes; expected {header_size} bytes for {ndim} dims",
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    # Python ints: numpy's int64 product wraps past 2**63, and a crafted header could wrap
    # to the size of the data that follows it.
    elements = math.prod(shape)
    if elements * dtype.itemsize > _MAX_BYTES:
        raise DatasetError(
            path,
            f"header dimensions {shape} ({describe_magic(magic)}) "
            f"multiply to {elements} elements, past 2**63 bytes; expected "
            f"the dimensions of the data that follows",
        )
    expected_bytes = elements * dtype.itemsize
    data_bytes = len(raw) - header_size
    if data_bytes != expected_bytes:
        state = "truncated" if data_bytes < expected_bytes else "has trailing bytes"
        raise DatasetError(
            path,
            f"data {state}: {data_bytes} bytes after the header; expected "
            f"{expected_bytes} for shape {shape} of {describe_magic(magic)}",
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _read_bytes(path: str | os.PathLike) -> bytes:
    if os.fspath(path).endswith(".gz"):
        try:
            with gzip.open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise
        except (OSError, EOFError, zlib.error) as error:
            raise DatasetError(path, f"not a readable gzip file ({error})") from None
    with open(path, "rb") as handle:
        return handle.read()
