"""Files that survive interruption: atomic writes, and checksummed artifacts.

``write_atomically`` writes to a temporary file beside the target and renames it into place, so
a kill leaves the old file or the new one, never half of one. Run artifacts go one step further
(``write_artifact`` / ``read_artifact``): a ``<name>.sha256`` file beside each one, written after
it, records its digest; an artifact whose digest is missing or wrong counts as absent, so a
truncated or corrupted file is redone, never silently used.

A write that the file system refuses (full, read-only, over quota, not permitted) raises
:class:`WriteError`: one line naming the path and what to do. Nothing is left half-written, so
the run directory stays resumable once the cause is fixed.

An artifact whose digest matches but whose bytes do not parse as what it should hold (edited
by hand and its digest recomputed, or written by other code) raises :class:`DamagedArtifact`,
one line naming the file; what the bytes mean (shapes, values) is for the caller to check.

JSON artifacts stay valid JSON whatever they hold: a non-finite float (a diverged loss) is
written as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` and read back as the float.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import struct
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import safetensors.torch
import torch

SIDECAR_SUFFIX = ".sha256"


TEMPORARY_SUFFIX = ".tmp"

# What to do about each way a file system refuses a write.
_ADVICE = {
    errno.ENOSPC: "free some space there (or use another disk)",
    errno.EDQUOT: "free some space within your quota (or use another disk)",
    errno.EROFS: "remount it read-write, or copy the directory somewhere writable",
    errno.EACCES: "make it writable for this user, or use a directory you own",
    errno.EPERM: "make it writable for this user, or use a directory you own",
}


class DamagedArtifact(ValueError):
    """An artifact whose digest matches but whose content is not what this tool writes there;
    the message is one line naming the file and what to do."""

    def __init__(self, path: Path, reason: str):
        path = Path(path)
        super().__init__(
            f"{path} is not a file this tool wrote, or it is damaged ({reason}); "
            f"delete it and its {path.name}{SIDECAR_SUFFIX}, then run the command "
            f"again"
        )
        self.path = path
        self.reason = reason


class WriteError(OSError):
    """The file system refused to write ``path``; the message is one line saying why and what
    to do. Whatever was there before is intact (writes are atomic). An OSError still, so code
    that catches those keeps working."""

    def __init__(self, path: Path, error: OSError, action: str = "write"):
        reason = error.strerror or str(error) or type(error).__name__
        advice = _ADVICE.get(error.errno, "fix the cause")
        super().__init__(
            f"cannot {action} {Path(path)}: {reason}; {advice}, then run the same "
            f"command again (what was written so far is kept)"
        )
        self.path = Path(path)
        self.errno = error.errno


@contextlib.contextmanager
def _refused_as_write_error(path: Path, action: str = "write"):
    """Turn the file system's refusal to write ``path`` into a one-line :class:`WriteError`.
    A missing directory or a directory in the file's place are the caller's mistakes and pass
    through as they are."""
    try:
        yield
    except (WriteError, FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError):
        raise
    except OSError as error:
        raise WriteError(path, error, action) from None


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    staged = _staged(path, write)
    try:
        with _refused_as_write_error(path):
            os.replace(staged, path)
    except BaseException:
        _discard(staged)
        raise


def make_directory(path: Path) -> None:
    """``mkdir -p path``, a refusal raised as :class:`WriteError`."""
    with _refused_as_write_error(path, "make the directory"):
        Path(path).mkdir(parents=True, exist_ok=True)


def remove_temporaries(directory: Path) -> None:
    """Delete the temporary files that killed writers left in ``directory``. One that cannot be
    deleted (a read-only directory) is left: it is never read, and a later run deletes it."""
    for leftover in Path(directory).glob(f".*{TEMPORARY_SUFFIX}"):
        with contextlib.suppress(OSError):
            leftover.unlink(missing_ok=True)


def _staged(path: Path, content) -> Path:
    """A complete, synced temporary file beside ``path`` holding ``content`` (bytes, or a
    function writing to a file), ready to be renamed into place."""
    # A unique name per writer, so two processes saving the same path never share a temp file.
    temporary = path.with_name(
        f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMPORARY_SUFFIX}"
    )
    try:
        with _refused_as_write_error(path), open(temporary, "xb") as file:
            if isinstance(content, bytes):
                file.write(content)
            else:
                content(file)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        _discard(temporary)
        raise
    return temporary


def _discard(*temporaries: Path) -> None:
    """Delete temporary files of a write that failed. The cleanup must not bury the cause: on a
    read-only or full disk the unlink can fail too, and a leftover temporary is harmless
    (never read, removed by a later run)."""
    for temporary in temporaries:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def write_artifact(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, then its digest to the sidecar (directories are
    made as needed).

    Between the two renames the new bytes sit beside the old digest, which does not match
    them: a kill there makes the artifact read as absent (redone), never as the wrong thing.
    The window is two renames long, so a kill almost always leaves the old artifact valid.
    """
    path = Path(path)
    make_directory(path.parent)
    digest = hashlib.sha256(data).hexdigest().encode()
    staged_data = _staged(path, data)
    try:
        staged_digest = _staged(_sidecar(path), digest)
    except BaseException:
        _discard(staged_data)
        raise
    try:
        with _refused_as_write_error(path):
            os.replace(staged_data, path)
            os.replace(staged_digest, _sidecar(path))
    except BaseException:
        _discard(staged_data, staged_digest)
        raise


def read_artifact(path: Path) -> bytes | None:
    """The bytes at ``path`` when its sidecar vouches for them; None when it is missing,
    incomplete (no sidecar) or corrupted (digest mismatch)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        expected = _sidecar(path).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return data if hashlib.sha256(data).hexdigest() == expected else None


def artifact_exists(path: Path) -> bool:
    return read_artifact(path) is not None


def remove_artifact(path: Path) -> None:
    path = Path(path)
    with _refused_as_write_error(path, "remove"):
        _sidecar(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)


# How a non-finite float is spelt in JSON artifacts (the spellings ``float()`` reads back).
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def write_json(path: Path, value: Any) -> None:
    text = json.dumps(_finite_json(value), indent=2, sort_keys=False, allow_nan=False)
    write_artifact(path, (text + "\n").encode())


def read_json(path: Path) -> Any | None:
    """The value of a JSON artifact (None when absent); :class:`DamagedArtifact` when its bytes
    are not JSON."""
    data = read_artifact(path)
    if data is None:
        return None
    try:
        return _from_finite_json(json.loads(data))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise DamagedArtifact(path, f"not JSON: {_first_line(error)}") from None


def _finite_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its string spelling: bare ``NaN``
    tokens are not JSON, and other readers (``jq``, browsers) refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(item) for item in value]
    return value


def _from_finite_json(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {key: _from_finite_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_finite_json(item) for item in value]
    return value


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# safetensors lays tensors out sorted by name ("features.10" before "features.3"); the order of
# a model's layers matters (it breaks ties in global pruning), so it travels in the metadata.
ORDER_KEY = "names"


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A name -> tensor mapping as a safetensors artifact that keeps the mapping's order."""
    cpu = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    write_artifact(path, safetensors.torch.save(cpu, metadata={ORDER_KEY: json.dumps(list(cpu))}))


def read_tensors(path: Path) -> dict[str, torch.Tensor] | None:
    data = read_artifact(path)
    if data is None:
        return None
    try:
        tensors = safetensors.torch.load(data)
        (header_size,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
        order = json.loads(metadata.get(ORDER_KEY, "null"))
    except Exception as error:  # safetensors raises its own error types for bad bytes
        raise DamagedArtifact(path, f"not a safetensors file: {_first_line(error)}") from None
    if not isinstance(order, list) or sorted(order) != sorted(tensors):
        return tensors
    return {name: tensors[name] for name in order}


def write_torch(path: Path, value: Any) -> None:
    """``torch.save`` of plain containers of tensors and numbers (a training checkpoint)."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    write_artifact(path, buffer.getvalue())


def read_torch(path: Path) -> Any | None:
    data = read_artifact(path)
    if data is None:
        return None
    try:
        return load_torch_quietly(io.BytesIO(data))
    except Exception as error:  # unpickling raises many types; all mean the same here
        raise DamagedArtifact(path, torch_load_reason(error)) from None


def torch_load_reason(error: BaseException) -> str:
    """The gist of a ``torch.load(weights_only=True)`` failure, in one line.

    Its refusal of a pickled object is mostly advice: to load with ``weights_only=False``
    (which would run whatever code the file holds), to file an issue, to read the docs. The
    cause is the one line that is none of those, or what follows "WeightsUnpickler error:"."""
    text = str(error).strip()
    marked = re.search(r"WeightsUnpickler error:[ \t]*(\S[^\n]*)", text)
    if marked:
        return _without_advice(marked.group(1))
    for line in text.splitlines():
        line = line.strip()
        if line and "weights_only" not in line and not line.startswith(_TORCH_ADVICE):
            return _without_advice(line)
    return "not a file torch.save wrote" if "weights_only" in text else _first_line(error)


def _without_advice(line: str) -> str:
    """A cause's first sentence, without what follows (how to allow the global anyway)."""
    return re.split(r"(?<=\.)\s+(?=Please|Check|Re-running)", line.strip())[0].rstrip(".")


def load_torch_quietly(source, **kwargs):
    """``torch.load(source, map_location="cpu", weights_only=True)`` without its warnings
    about pickle protocols: a file it cannot read raises, and that error says why."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(source, map_location="cpu", weights_only=True, **kwargs)


# How the lines of torch.load's advice begin, around the one line that says what went wrong.
_TORCH_ADVICE = (
    "Weights only load failed",
    "Please file an issue",
    "Check the documentation",
    "WeightsUnpickler error",
    "(1)",
    "(2)",
)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)
