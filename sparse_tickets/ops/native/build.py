"""Building an extension so that it never hangs and never leaves anything running.

- **One builder at a time, and no stale locks.** The build holds an OS lock (``flock``) on
  ``<build directory>.lock`` while it runs. The kernel releases it when the holder exits, however
  it exits (a SIGKILL included), so a dead builder never blocks the next one. A process that
  finds the lock taken says in one line which process holds it, then waits for it. Under that
  lock, torch's own lock file inside the build directory (which a killed ``cpp_extension`` build
  leaves behind, and on which every later build would wait forever) can only be stale, and is
  removed.
- **No orphaned compiler.** The compiler runs under ``build_worker.py``, in a process group of
  its own that dies with the process that asked for the build (Ctrl-C, an exception or a kill).
- **A torn build is never loaded.** The worker marks a finished build with ``<name>.built``;
  a library without the marker is rebuilt (ninja redoes only what is missing).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; builds there rely on torch's own lock file alone
    fcntl = None

_WORKER = Path(__file__).with_name("build_worker.py")
_TORCH_LOCK_FILE = "lock"  # cpp_extension's FileBaton, inside the build directory
_GRACE_S = 10.0  # for ninja to stop its compilers after SIGTERM
# A diagnostic as gcc, clang, nvcc and the linker driver print it: "file:12:3: error: ...".
_COMPILER_ERROR = re.compile(r"(^|[\s:])error:")


class BuildFailed(RuntimeError):
    """The compiler failed; the message is its last line and where the full log is."""


def library_path(build_directory: Path, name: str) -> Path:
    from torch.utils.cpp_extension import LIB_EXT

    return build_directory / f"{name}{LIB_EXT}"


def is_built(build_directory: Path, name: str) -> bool:
    return (build_directory / f"{name}.built").is_file() and library_path(
        build_directory, name
    ).is_file()


@contextlib.contextmanager
def exclusive(build_directory: Path, announce):
    """Hold the build lock of ``build_directory``; ``announce(line)`` is told about a wait."""
    lock_path = build_directory.with_name(build_directory.name + ".lock")
    if fcntl is None:
        yield
        return
    with open(lock_path, "a+") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "another process"
            announce(
                f"waiting for {holder}, which is building in {build_directory} (lock {lock_path})"
            )
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"process {os.getpid()}")
        lock_file.flush()
        try:
            yield
        finally:
            lock_file.truncate(0)
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def remove_stale_torch_lock(build_directory: Path) -> bool:
    """Remove cpp_extension's lock file; call only while holding :func:`exclusive`."""
    try:
        (build_directory / _TORCH_LOCK_FILE).unlink()
        return True
    except FileNotFoundError:
        return False


def compile_in_worker(
    *,
    name: str,
    sources: list[str],
    build_directory: Path,
    cxx_flags: list[str],
    cuda_flags: list[str],
    ld_flags: list[str],
    with_cuda: bool,
) -> None:
    """Run the compiler in its own process group; raises BuildFailed. Writes ``build.log``."""
    arguments = dict(
        name=name,
        sources=sources,
        build_directory=str(build_directory),
        cxx_flags=cxx_flags,
        cuda_flags=cuda_flags,
        ld_flags=ld_flags,
        with_cuda=with_cuda,
        parent_pid=os.getpid(),
    )
    log_path = build_directory / "build.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, str(_WORKER), json.dumps(arguments)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = worker.wait()
        except BaseException:  # Ctrl-C or any exit: the compiler goes down with us
            _kill_group(worker)
            raise
    if returncode != 0:
        raise BuildFailed(
            f"{_summary_line(log_path) or f'exit status {returncode}'} (full log: {log_path})"
        )


def _kill_group(worker: subprocess.Popen) -> None:
    # The worker's own shutdown (build_worker.stop_group): ninja first stops its compilers.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + _GRACE_S
        while worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()


def _summary_line(path: Path) -> str | None:
    """The compiler's first error (the later ones often follow from it), else the log's last
    line: ninja's own last words ("build stopped: subcommand failed") say nothing."""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if _COMPILER_ERROR.search(line):
            return line
    return lines[-1] if lines else None
