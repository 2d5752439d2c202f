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
