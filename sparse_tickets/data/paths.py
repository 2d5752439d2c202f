"""The directory a file-backed dataset reads, checked once for every such dataset."""

from __future__ import annotations

import os
from pathlib import Path


def existing_directory(dataset: str, root: str | os.PathLike | None, holding: str) -> Path:
    """``root`` as an existing directory, or a one-line error saying what ``dataset`` needs.

    ``holding`` describes the files the directory must hold, for the error messages.
    """
    if root is None:
        raise ValueError(
            f"{dataset} needs a directory (root=...) holding {holding}; nothing is downloaded"
        )
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"{dataset} root must be a path; got {type(root).__name__}")
    directory = Path(root).expanduser()
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(
            f"{dataset} directory {directory} is not a directory; expected "
            f"a directory holding {holding}"
        )
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{dataset} directory {directory} does not exist; expected a "
            f"directory holding {holding}"
        )
    return directory
