"""A failed extension build is tried once per process and remembered on disk, per build key and
compiler; ``sparse-tickets build`` tries it again.

Real builds into a temporary cache with real compilers: broken ones (a script that answers
``--version`` as c++ does and compiles nothing, and /bin/false) and the machine's own on a tiny
C++ source (no torch headers: seconds). A fresh process's view is an empty outcome table, as
the other tests of this directory get it by starting one.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sparse_tickets.ops.native import build, extension

pytestmark = pytest.mark.skipif(build.fcntl is None, reason="no flock on this platform")

TINY_SOURCE = 'extern "C" int sparse_tickets_probe() { return 42; }\n'
BROKEN_COMPILER = textwrap.dedent("""\
    #!/bin/sh
    case "$1" in --version|-v|-dumpversion|-dumpfullversion) exec c++ "$@" ;; esac
    echo "broken_cxx: error: this compiler compiles nothing" >&2
    exit 1
""")
BUILDING = "building the cpu extension"


@pytest.fixture
def fresh_process(monkeypatch, tmp_path):
    """``fresh_process()``: this process forgets what it got, as a new process would."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSE_TICKETS_TEST_EXTENSION", raising=False)
    monkeypatch.setattr(extension, "_outcomes", {})
    return lambda: monkeypatch.setattr(extension, "_outcomes", {})


def _spec(tmp_path, text=TINY_SOURCE, name="sources"):
    root = tmp_path / name
    (root / "cpu").mkdir(parents=True, exist_ok=True)
    (root / "cpu" / "probe.cpp").write_text(text)
    return extension.ExtensionSpec("cpu", "SPARSE_TICKETS_TEST_EXTENSION", ("cpu/probe.cpp",), root)


def _broken_compiler(tmp_path, name="broken_cxx"):
    path = tmp_path / name
    path.write_text(BROKEN_COMPILER)
    path.chmod(0o755)
    return path


def _failure_lines(stderr):
    return [line for line in stderr.splitlines() if "failed to build" in line]


def test_a_failed_build_is_tried_once_per_process_and_remembered_per_compiler(
    tmp_path, monkeypatch, capfd, fresh_process
):
    spec = _spec(tmp_path)
    broken = _broken_compiler(tmp_path)
    monkeypatch.setenv("CXX", str(broken))

    reasons = {extension.unavailable_reason(spec) for _ in range(5)}
    stderr = capfd.readouterr().err
    assert stderr.count(BUILDING) == 1
    (reason,) = reasons
    log = extension.build_directory(spec) / "build.log"
    assert reason == (
        f"the cpu extension failed to build with {broken}: broken_cxx: error: "
        f"this compiler compiles nothing (full log: {log}); `sparse-tickets "
        f"build` retries"
    )
    assert _failure_lines(stderr) == [
        f"sparse_tickets: {reason}; meanwhile the slower reference backend serves"
    ]
    record = extension.failure_record_path(spec)
    assert record.parent == extension.build_directory(spec)
    assert "compiles nothing" in json.loads(record.read_text())["error"]

    # The next process is told in one line, and does not try again.
    fresh_process()
    remembered = extension.unavailable_reason(spec)
    stderr = capfd.readouterr().err
    assert BUILDING not in stderr
    assert "in an earlier run: broken_cxx: error: this compiler compiles nothing" in remembered
    assert f"(full log: {log})" in remembered and f"remembered in {record}" in remembered
    assert len(_failure_lines(stderr)) == 1

    # The same path upgraded in place is another compiler: tried again.
    status = broken.stat()
    os.utime(broken, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    fresh_process()
    assert extension.unavailable_reason(spec) is not None
    assert capfd.readouterr().err.count(BUILDING) == 1

    # A working compiler builds it, and the failures are forgotten with it.
    monkeypatch.setenv("CXX", "c++")
    fresh_process()
    assert extension.unavailable_reason(spec) is None
    assert capfd.readouterr().err.count(BUILDING) == 1
    assert not list(extension.build_directory(spec).glob("failed-*.json"))


def test_changed_sources_are_tried_again_with_the_compiler_that_failed(
    tmp_path, monkeypatch, capfd, fresh_process
):
    monkeypatch.setenv("CXX", str(_broken_compiler(tmp_path)))
    first = _spec(tmp_path)
    assert extension.unavailable_reason(first) is not None
    changed = _spec(tmp_path, TINY_SOURCE + "// changed\n", name="changed")
    fresh_process()
    assert extension.unavailable_reason(changed) is not None
    assert capfd.readouterr().err.count(BUILDING) == 2
    assert extension.failure_record_path(first).is_file()
    assert extension.failure_record_path(changed).is_file()
    assert extension.build_directory(first) != extension.build_directory(changed)


def test_forced_a_remembered_failure_raises_at_once_and_a_retry_builds_again(
    tmp_path, monkeypatch, capfd, fresh_process
):
    spec = _spec(tmp_path)
    monkeypatch.setenv("CXX", str(_broken_compiler(tmp_path)))
    assert extension.unavailable_reason(spec) is not None
    record = extension.failure_record_path(spec)
    record.write_text(record.read_text().replace("compiles nothing", "compiled nothing then"))
    capfd.readouterr()

    monkeypatch.setenv(spec.env_var, "force")
    fresh_process()
    with pytest.raises(extension.ExtensionUnavailable, match="compiled nothing then"):
        extension.load(spec)
    assert capfd.readouterr().err == ""  # the error is the message

    # A retry ignores the memory: it builds, fails again and remembers the new failure.
    with pytest.raises(extension.ExtensionUnavailable, match="compiles nothing"):
        extension.load(spec, retry=True)
    assert capfd.readouterr().err.count(BUILDING) == 1
    assert "compiles nothing" in json.loads(record.read_text())["error"]


def test_an_unreadable_record_counts_as_none(tmp_path, monkeypatch, capfd, fresh_process):
    spec = _spec(tmp_path)
    monkeypatch.setenv("CXX", str(_broken_compiler(tmp_path)))
    record = extension.failure_record_path(spec)
    record.parent.mkdir(parents=True)
    record.write_text('{"error": ')  # damaged on disk
    assert extension.unavailable_reason(spec) is not None
    assert capfd.readouterr().err.count(BUILDING) == 1
    assert "compiles nothing" in json.loads(record.read_text())["error"]


# The CLI with a broken compiler, as a user would meet it: an IMP run of two short levels.
IMP = [
    "imp",
    "--iterations",
    "20",
    "--eval-every",
    "10",
    "--levels",
    "1",
    "--controls",
    "none",
    "--train-size",
    "600",
    "--quiet",
    "--no-report",
]


def _cli(arguments, environment):
    return subprocess.run(
        [sys.executable, "-m", "sparse_tickets", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_cli_with_a_broken_compiler_tries_once_and_build_retries(tmp_path):
    cache = tmp_path / "cache"
    environment = {
        **os.environ,
        "CXX": "/bin/false",
        "TORCH_EXTENSIONS_DIR": str(cache),
        "SPARSE_TICKETS_CPU_EXTENSION": "auto",
        "OMP_NUM_THREADS": "1",
    }

    first = _cli([*IMP, "--runs-dir", str(tmp_path / "first")], environment)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count(BUILDING) == 1
    (failure,) = _failure_lines(first.stderr)
    (directory,) = [path for path in cache.iterdir() if path.is_dir()]
    assert f"(full log: {directory / 'build.log'})" in failure
    assert "`sparse-tickets build` retries" in failure
    (record,) = directory.glob("failed-*.json")
    assert "/bin/false" in failure and "false" in json.loads(record.read_text())["compiler"]
    assert "level 1 (80.0%)" in first.stderr  # both levels ran, on the reference backend

    second = _cli([*IMP, "--runs-dir", str(tmp_path / "second")], environment)
    assert second.returncode == 0, second.stderr
    assert BUILDING not in second.stderr
    (remembered,) = _failure_lines(second.stderr)
    assert f"remembered in {record}" in remembered

    retried = _cli(["build"], environment)
    assert retried.returncode == 1
    assert retried.stderr.count(BUILDING) == 1
    assert "cpu extension: the cpu extension failed to build with /bin/false" in retried.stdout
    assert record.is_file()


@pytest.mark.parametrize("spec", [extension.CPU, extension.CUDA], ids=["cpu-units", "gpu-units"])
def test_every_unit_of_the_kernel_sources_is_built(spec):
    # A unit left out of the list compiles nowhere, and its ops fail only when first called.
    suffix = ".cpp" if spec.kind == "cpu" else (".cu", ".cpp")
    directory = spec.source_root / spec.kind
    units = {
        f"{spec.kind}/{path.name}" for path in directory.iterdir() if path.name.endswith(suffix)
    }
    assert set(spec.sources) == units


def test_an_edited_header_changes_the_build_key(tmp_path):
    # The units include headers the key must cover, or a cached build of old headers is loaded.
    spec = _spec(tmp_path)
    header = spec.source_root / "cpu" / "shared.h"
    header.write_text("#pragma once\n")
    before = extension._fingerprint(spec)
    header.write_text("#pragma once\nconstexpr int kChanged = 1;\n")
    extension._fingerprint.cache_clear()
    assert extension._fingerprint(spec) != before
