"""Compile one extension with ``torch.utils.cpp_extension``, in a process of its own.

Run by :mod:`.build` as a script (``python build_worker.py ARGUMENTS_JSON``), never imported, so
it needs nothing but torch and can be found whichever copy of sparse_tickets started it. It is
the leader of its own process group, which ninja joins; ninja runs each compiler in a process
group of its own and, on SIGTERM, passes the signal on to them and waits for them. So a build is
stopped by SIGTERM to the worker's group, then SIGKILL for whatever is left (see
:func:`stop_group`): by the process that asked for the build (Ctrl-C, an exception), or by the
worker's watchdog thread as soon as that process is gone, however it died (a SIGKILL included),
so an interrupted build never leaves a compiler running.

On success it writes ``<name>.built`` beside the library, atomically: a library without that
marker may be the torn output of a killed link and is never loaded.
"""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

_WATCH_INTERVAL_S = 0.2
_GRACE_S = 10.0  # for ninja to stop its compilers before everything left is killed


def stop_group(group: int, still_running) -> None:
    """SIGTERM to ``group`` (ninja stops its compilers), then SIGKILL once ``still_running()``
    is false or the grace period is over."""
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_S
    while still_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _ninja_running() -> bool:
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    try:
        return bool(children.read_text().split())
    except OSError:  # no /proc: give ninja the whole grace period
        return True


def _stop_build_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_WATCH_INTERVAL_S)
    stop_group(os.getpgid(0), _ninja_running)


def _prefer_this_environments_tools() -> None:
    # The ninja (and python) of the environment that runs the build, whether or not that
    # environment is activated: not whichever ninja PATH happens to find first.
    directories = [str(Path(sys.executable).parent)]
    try:
        import ninja

        directories.insert(0, ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    os.environ["PATH"] = os.pathsep.join(directories + [os.environ.get("PATH", "")])


def main(arguments: dict) -> int:
    # The worker itself outlives the SIGTERM to its group (a no-op handler, not SIG_IGN, which
    # ninja would inherit), so that it can finish the job with SIGKILL.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    threading.Thread(
        target=_stop_build_when_orphaned, args=(arguments["parent_pid"],), daemon=True
    ).start()
    _prefer_this_environments_tools()
    from torch.utils import cpp_extension

    build_directory = Path(arguments["build_directory"])
    name = arguments["name"]
    try:
        cpp_extension.load(
            name=name,
            sources=arguments["sources"],
            build_directory=str(build_directory),
            extra_cflags=arguments["cxx_flags"],
            extra_cuda_cflags=arguments["cuda_flags"],
            extra_ldflags=arguments["ld_flags"],
            is_python_module=False,
            with_cuda=arguments["with_cuda"],
            verbose=False,
        )
    except Exception as error:  # the compiler's message: the caller shows its last line
        print(str(error).strip() or type(error).__name__, file=sys.stderr)
        return 1
    marker = build_directory / f"{name}.built"
    staging = marker.with_suffix(".built.tmp")
    staging.write_text(json.dumps({"name": name, "sources": arguments["sources"]}))
    os.replace(staging, marker)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
