import os

import pytest
import torch

CUDA = torch.cuda.is_available()

# Every device the suite can run on here: CUDA cases are collected everywhere, so a GPU machine
# runs them and a CPU machine reports them as skipped, never silently absent.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_configure(config):
    # "auto" would otherwise measure this machine's thresholds the first time a test (or a run
    # it starts in a subprocess) asks, and cache them beside the build: the suite takes the
    # instruction-set rule instead; tests/compact runs the measurement and its cache itself.
    os.environ.setdefault("SPARSE_TICKETS_CALIBRATION", "off")


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
    import sys
    from pathlib import Path

    import sparse_tickets.lottery.locking

    started = []

    def hold(directory):
        process = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, sparse_tickets.lottery.locking.__file__,
             str(directory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
