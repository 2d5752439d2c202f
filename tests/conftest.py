"""What the whole suite shares: the devices it runs on, what may skip, and a summary of the
skips by reason.

Only two kinds of test may skip: one that needs a CUDA GPU (marked ``cuda``) on a machine
without one, and one that needs an optional peer that is not a requirement of the package
(SparseProp; triton where it has no wheel). Everything the README's install command installs
is required: a test that needs the compiled CPU kernels, mlxtend, transformers or (on Linux
x86-64 and aarch64) triton fails where it is missing, never skips. Under
``SPARSE_TICKETS_CPU_EXTENSION=force`` (as CI runs) the session starts by building the CPU
extension, a failure remembered from an earlier run included, and stops at once if it fails.
"""

import collections
import importlib
import os
import platform
import sys
from pathlib import Path

import pytest
import torch


def _import_the_installed_kernels_package() -> None:
    """``python -m pytest`` puts the repository root first on sys.path, where the folder
    kernels/ (installed as sparse_tickets.kernels) would stand in for the package ``kernels``
    of the Hugging Face hub, which transformers 5.25 and later imports: the installed one is
    imported first, from the rest of the path, so that transformers finds it."""
    root = Path(__file__).resolve().parent.parent
    if "kernels" in sys.modules:
        return
    saved = list(sys.path)
    sys.path[:] = [entry for entry in sys.path if Path(entry or os.getcwd()).resolve() != root]
    try:
        importlib.import_module("kernels")
    except ImportError:
        pass  # not installed: nothing imports it
    finally:
        sys.path[:] = saved


_import_the_installed_kernels_package()

CUDA = torch.cuda.is_available()

# setup.py requires triton where it has wheels; elsewhere it is an optional peer.
TRITON_IS_REQUIRED = platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")

# Every device the suite can run on here: CUDA cases are collected everywhere, so a GPU machine
# runs them and a CPU machine reports them as skipped, never silently absent.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_configure(config):
    # "auto" would otherwise measure this machine's thresholds the first time a test (or a run
    # it starts in a subprocess) asks, and cache them beside the build: the suite takes the
    # instruction-set rule instead; tests/compact runs the measurement and its cache itself.
    os.environ.setdefault("SPARSE_TICKETS_CALIBRATION", "off")


def pytest_sessionstart(session):
    from sparse_tickets.ops.native import extension  # after pytest_configure's settings

    if extension.mode(extension.CPU) != "force":
        return
    try:
        extension.load(extension.CPU, retry=True)
    except extension.ExtensionUnavailable as error:
        pytest.exit(f"{extension.CPU.env_var}=force: {error}", returncode=1)


def import_triton_or_skip():
    """Import triton for a test module: a failure where the package requires it, a skip of the
    module where triton has no wheel and is not installed."""
    if TRITON_IS_REQUIRED:
        import triton  # noqa: F401  (missing here: the install is broken, the tests fail)
    else:
        pytest.importorskip(
            "triton",
            reason=f"triton has no wheel for {platform.system()} "
            f"{platform.machine()} and is not installed",
        )


def pytest_terminal_summary(terminalreporter):
    """The skipped tests grouped by reason, with how many in each file."""
    by_reason = collections.defaultdict(collections.Counter)
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        by_reason[reason.removeprefix("Skipped: ")][report.nodeid.split("::")[0]] += 1
    if not by_reason:
        return
    terminalreporter.section("skipped tests by reason")
    for reason, files in sorted(by_reason.items(), key=lambda item: -sum(item[1].values())):
        terminalreporter.write_line(f"{sum(files.values()):5d}  {reason}")
        terminalreporter.write_line(
            "       " + ", ".join(f"{name} ({count})" for name, count in sorted(files.items()))
        )


def pytest_collection_modifyitems(config, items):
    if CUDA:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


# A process that holds a run directory's lock until told to let go: the locking module loaded
# from its file alone (standard library only), so the process starts in a blink.
_HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("locking", sys.argv[1])
locking = importlib.util.module_from_spec(spec)
spec.loader.exec_module(locking)
with locking.held(sys.argv[2], command="holder --of the lock"):
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def lock_holder():
    """``hold(directory)``: a running process holding ``directory``'s lock (its Popen: close
    its stdin to make it let go, or kill it)."""
    import subprocess

    import sparse_tickets.lottery.locking

    started = []

    def hold(directory):
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _HOLDER,
                sparse_tickets.lottery.locking.__file__,
                str(directory),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
