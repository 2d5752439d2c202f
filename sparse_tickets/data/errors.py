"""The error every dataset reader raises for a file it cannot accept."""

from __future__ import annotations

import os


class DatasetError(ValueError):
    """A dataset file exists but does not hold what its format promises.

    The message is one line: the file, what was found, and what was expected. A file that is
    absent is a :class:`FileNotFoundError` instead, so callers can tell "fetch it" from "it is
    damaged".
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
