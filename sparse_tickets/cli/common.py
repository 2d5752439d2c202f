"""What every command of the command line shares: its name, its exit statuses, and the one
line it says a mistake in."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

PROG = "sparse-tickets"
USAGE_ERROR = 2
FAILURE = 1  # not the user's mistake: a disk that refuses a write, a file that cannot be read


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit status 2."""


@contextlib.contextmanager
def usage_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Raise an error of ``kinds`` (the experiment's word for a request it refuses) from the
    block as a :class:`UsageError` of the same line."""
    try:
        yield
    except kinds as error:
        raise UsageError(f"{PROG}: {error}") from None


def note(line: str) -> None:
    """A line to the user, beside the command's output."""
    print(f"{PROG}: {line}", file=sys.stderr)


def working_options(args) -> dict:
    """How a command that trains works in its run directory (the options of
    :func:`~sparse_tickets.lottery.session.working_in`): its command line names it in the
    directory's lock, ``--wait`` waits for another command there (saying so), ``--quiet``
    shows log lines instead of bars."""
    return {
        "quiet": args.quiet,
        "command": args.command_line,
        "wait": args.wait,
        "on_wait": lambda text: print(f"{PROG}: {text}", file=sys.stderr, flush=True),
    }
