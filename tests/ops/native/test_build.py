"""Extension builds never hang, never leave a compiler running and never rebuild needlessly.

Real builds of a tiny C++ source (no torch headers: seconds) into a temporary cache, in
subprocesses, as a user's commands would run them.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sparse_tickets.ops.native import build

pytestmark = pytest.mark.skipif(build.fcntl is None, reason="no flock on this platform")

TINY_SOURCE = 'extern "C" int sparse_tickets_probe() { return 42; }\n'
# Slow on purpose (torch's whole extension header), so that a build can be killed mid-compile.
SLOW_SOURCE = "#include <torch/extension.h>\nint sparse_tickets_slow_probe() { return 1; }\n"

LOAD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from sparse_tickets.ops.native import extension
    spec = extension.ExtensionSpec("cpu", "SPARSE_TICKETS_TEST_EXTENSION", ("cpu/probe.cpp",),
                                   Path(sys.argv[1]))
    record = extension.build_record(spec)
    print(json.dumps({"library": str(record.library), "seconds": record.build_seconds,
                      "directory": str(extension.build_directory(spec))}))
""")


def _sources(tmp_path, text, name="sources"):
    root = tmp_path / name
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "probe.cpp").write_text(text)
    return root


def _environment(tmp_path, **extra):
    environment = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path / "cache"), **extra)
    environment.pop("SPARSE_TICKETS_TEST_EXTENSION", None)
    return environment


def _load(root, environment, timeout=600):
    import json

    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(root)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_lock_left_by_a_killed_build_is_taken_over_and_the_cache_outlives_another_ninja(tmp_path):
    root = _sources(tmp_path, TINY_SOURCE)
    environment = _environment(tmp_path)
    # Where this spec builds, then torch's lock file as a build killed under it leaves it.
    first, _ = _load(root, environment)
    directory = Path(first["directory"])
    for built in directory.iterdir():
        built.unlink() if built.is_file() else None
    (directory / "lock").write_text("")

    rebuilt, stderr = _load(root, environment)
    assert rebuilt["seconds"] is not None and Path(rebuilt["library"]).is_file()
    assert f"removed a lock file left in {directory}" in stderr
    assert not (directory / "lock").exists()

    # Another ninja first on PATH (as with an environment used without being activated): the
    # finished build is loaded as it is, without running any ninja.
    fake_bin = tmp_path / "fake_bin"
    fake_bin.mkdir()
    called = tmp_path / "fake_ninja_was_called"
    (fake_bin / "ninja").write_text(f"#!/bin/sh\ntouch {called}\nexit 1\n")
    (fake_bin / "ninja").chmod(0o755)
    other_path = _environment(tmp_path, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    reused, stderr = _load(root, other_path)
    assert reused == {**rebuilt, "seconds": None}
    assert not called.exists() and "building" not in stderr


def test_the_build_is_keyed_on_the_sources_not_on_where_they_are(tmp_path):
    from sparse_tickets.ops.native import extension

    def name(root):
        return extension._build_name(
            extension.ExtensionSpec(
                "cpu", "SPARSE_TICKETS_TEST_EXTENSION", ("cpu/probe.cpp",), root
            )
        )

    first = name(_sources(tmp_path, TINY_SOURCE, "a"))
    assert name(_sources(tmp_path, TINY_SOURCE, "b")) == first  # another place, same build
    with_header = _sources(tmp_path, TINY_SOURCE, "c")
    (with_header / "cpu" / "probe.h").write_text("// a header the source may include\n")
    assert name(with_header) != first  # headers count
    assert name(_sources(tmp_path, TINY_SOURCE + "// changed\n", "d")) != first


def _hold_lock(directory):
    """A process holding ``directory``'s build lock until it is killed."""
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from sparse_tickets.ops.native import build
        with build.exclusive(Path({str(directory)!r}), announce=print):
            print("held", flush=True)
            time.sleep(600)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_live_builder_is_named_and_waited_for_and_a_dead_one_blocks_nothing(tmp_path):
    directory = tmp_path / "sparse_tickets_cpu_0123"
    holder = _hold_lock(directory)
    announced = []
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            from pathlib import Path
            from sparse_tickets.ops.native import build
            with build.exclusive(Path({str(directory)!r}), announce=print):
                print("acquired", flush=True)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    announced.append(waiter.stdout.readline().strip())
    assert announced[0].startswith(
        f"waiting for process {holder.pid}, which is building in {directory}"
    )
    holder.kill()  # SIGKILL: the kernel releases its lock
    holder.wait()
    assert waiter.stdout.readline().strip() == "acquired"
    assert waiter.wait(timeout=60) == 0

    # The lock file of the dead holder is still there; it blocks nothing.
    assert directory.with_name(directory.name + ".lock").exists()
    with build.exclusive(directory, announce=announced.append):
        pass
    assert len(announced) == 1


def _compilers_of(path_fragment):
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command_line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                program = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if path_fragment in command_line and not program.startswith("python"):
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the compiler")
def test_killing_the_process_that_builds_kills_its_compiler_and_the_next_build_succeeds(tmp_path):
    root = _sources(tmp_path, SLOW_SOURCE)
    environment = _environment(tmp_path)
    builder = subprocess.Popen(
        [sys.executable, "-c", LOAD, str(root)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not _compilers_of(str(root)):
        assert builder.poll() is None, "the build ended before its compiler could be seen"
        assert time.monotonic() < deadline, "no compiler started"
        time.sleep(0.05)
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    deadline = time.monotonic() + 30
    while _compilers_of(str(root)):
        assert time.monotonic() < deadline, f"compiler left running: {_compilers_of(str(root))}"
        time.sleep(0.1)

    # The torn build is not loaded: the next command builds it again, to the end.
    (root / "cpu" / "probe.cpp").write_text(TINY_SOURCE)  # same spec path, quicker to finish
    finished, _ = _load(root, environment)
    assert finished["seconds"] is not None
