import pytest
import torch

CUDA = torch.cuda.is_available()

# Every device the suite can run on here: CUDA cases are collected everywhere, so a GPU machine
# runs them and a CPU machine reports them as skipped, never silently absent.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


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
