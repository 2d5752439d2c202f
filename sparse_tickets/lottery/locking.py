"""One writer per run directory: an exclusive OS file lock, held while a command works in it.

The lock is ``fcntl.flock`` on ``<run>/.lock``. The kernel releases it when its process ends,
however it ends (SIGKILL included), so a killed run never leaves a stale lock: the file may stay,
but nobody holds it. The holder writes who it is into the file (process id, host, command, start
time), so a second command can say in one line which process is in the way.

``flock`` locks belong to an open file, not to a process, so two commands in one Python process
exclude each other as well. On a network file system ``flock`` works as far as the file
system forwards it (Linux NFS does, as byte-range locks). Under torchrun, rank 0 alone takes the
lock: the ranks of one job are one writer.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: no lock (and no second writer is detected)
    fcntl = None

LOCK_FILE = ".lock"
_COMMAND_SHOWN = 80  # characters of the holder's command line shown in a message


class RunLocked(Exception):
    """Another process holds the run directory's lock; the message says which."""


@contextlib.contextmanager
def held(
    directory: Path,
    command: str = "",
    wait: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold ``directory``'s lock for the block. When another process holds it: raise
    :class:`RunLocked` naming that process, or with ``wait`` call ``on_wait`` with a line saying
    whom it waits for, then block until the lock is free.

    A directory this process cannot write in (read-only, not ours) is not locked: no writer of
    ours can change it through this process, and a command that only reads (a finished run)
    still works; the first write it attempts fails with a one-line error.
    """
    path = Path(directory) / LOCK_FILE
    descriptor = _open(path) if fcntl is not None else None
    if descriptor is None:
        yield
        return
    try:
        if not _try_lock(descriptor):
            holder = describe_holder(path)
            if not wait:
                raise RunLocked(
                    f"run directory {directory} is in use by {holder}; expected one "
                    f"command at a time per run: wait for it to end, or pass --wait"
                )
            if on_wait is not None:
                on_wait(f"run directory {directory} is in use by {holder}; waiting for it to end")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        _record_holder(descriptor, command)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(descriptor, 0)  # no later reader takes this holder for the next
    finally:
        os.close(descriptor)  # releases the lock, if held


def describe_holder(path: Path) -> str:
    """Who holds the lock file ``path``, in words, from what the holder wrote into it."""
    try:
        holder = json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        holder = None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return "another process"
    pid, host = holder["pid"], str(holder.get("host", ""))
    if host == socket.gethostname() and not _alive(pid):
        return "another process"  # the name is a dead holder's; the lock is someone else's
    where = f" on {host}" if host and host != socket.gethostname() else ""
    command = str(holder.get("command", ""))
    if len(command) > _COMMAND_SHOWN:
        command = command[: _COMMAND_SHOWN - 3] + "..."
    started = holder.get("started")
    since = (
        f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
        if isinstance(started, (int, float))
        else ""
    )
    about = f" ({command}{since})" if command else f" ({since[2:]})" if since else ""
    return f"process {pid}{where}{about}"


def current_holder(directory: Path) -> str | None:
    """Who works in ``directory`` now, in words, or None; read from what the holder wrote,
    without touching the lock (taking it, even briefly, could turn away a starting command).
    A holder on this host is believed while its process lives; one on another host while
    its lock file names it (it empties the file when it ends, but a killed one cannot)."""
    path = Path(directory) / LOCK_FILE
    try:
        holder = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return None
    host = str(holder.get("host", ""))
    if host == socket.gethostname():
        return f"process {holder['pid']}" if _alive(holder["pid"]) else None
    return f"process {holder['pid']} on {host}, by its lock file"


def _open(path: Path) -> int | None:
    flags = os.O_CLOEXEC
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o644)
    except OSError as error:
        if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    try:  # an existing lock file can be locked through a read-only descriptor
        return os.open(path, os.O_RDONLY | flags)
    except OSError:
        return None


def _try_lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _record_holder(descriptor: int, command: str) -> None:
    text = (
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": command,
                "started": time.time(),
            }
        )
        + "\n"
    )
    # Who holds the lock is for messages only: a full disk or a read-only descriptor must not
    # stop the command, whose own writes report such problems.
    with contextlib.suppress(OSError):
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, text.encode(), 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True
