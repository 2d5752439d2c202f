"""A best-effort on-disk cache of parsed dataset arrays.

The cache only ever saves time: when its directory cannot be created or written, or a cached
file cannot be read, callers parse the source again. Entries are keyed by a fingerprint of
their source file (size and modification time), so a changed source gets a new key and the
old entry is simply never read again.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .. import settings

CACHE_ENV_VAR = settings.CACHE


def cache_directory() -> Path | None:
    """``$SPARSE_TICKETS_CACHE`` if set, else ``~/.cache/sparse_tickets``; None without a home."""
    configured = settings.cache_directory()
    if configured is not None:
        return configured
    try:
        return Path.home() / ".cache" / "sparse_tickets"
    except RuntimeError:
        return None


def source_fingerprint(path: str | os.PathLike) -> str:
    """``<size>-<mtime in ns>`` of ``path``: changes whenever the file is replaced or edited."""
    status = os.stat(path)
    return f"{status.st_size}-{status.st_mtime_ns}"


def load_arrays(directory: Path | None, key: str) -> dict[str, np.ndarray] | None:
    """The arrays saved under ``key``, or None when there is no readable entry."""
    if directory is None:
        return None
    try:
        with np.load(directory / f"{key}.npz", allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        # Absent, truncated by a crash mid-write elsewhere, or not ours: parse again instead.
        return None


def save_arrays(directory: Path | None, key: str, arrays: dict[str, np.ndarray]) -> bool:
    """Save ``arrays`` under ``key`` atomically; False (and nothing written) when not writable."""
    if directory is None:
        return False
    temporary = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=directory, prefix=f".{key}.", suffix=".tmp", delete=False
        ) as handle:
            temporary = handle.name
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, directory / f"{key}.npz")
        return True
    except OSError:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
        return False
