"""Options of the benchmark suites and the machine fields of their JSON.

--bench-device cpu|cuda   where the suites run (default cpu)
--bench-quick             tiny shapes: every benchmark runs in seconds (the smoke test)
"""

import pytest
import torch

from benchmarks import machine
from benchmarks.profiles import DEVICES, profile_of
from sparse_tickets.compact import choice


def pytest_addoption(parser):
    group = parser.getgroup("sparse_tickets benchmarks")
    group.addoption(
        "--bench-device",
        default="cpu",
        choices=DEVICES,
        help="device the suites run on (default: cpu)",
    )
    group.addoption(
        "--bench-quick",
        action="store_true",
        help="tiny shapes, for checking that every benchmark runs",
    )


def pytest_configure(config):
    # Building a CSR weight is the point of the torch_csr baseline; its beta notice is noise.
    config.addinivalue_line(
        "filterwarnings", "ignore:Sparse CSR tensor support is in beta:UserWarning"
    )
    if config.getoption("bench_device") == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda: torch sees no CUDA GPU on this machine")


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(machine.describe(config.getoption("bench_device")))
    profile = profile_of(config)
    machine_info["bench_profile"] = profile.name
    machine_info["bench_omitted"] = list(profile.omitted)


@pytest.fixture
def profile(request):
    return profile_of(request.config)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _dense_masked_unless_asked():
    # A masked layer would otherwise pick its mode by density ("auto"), and a backend's row
    # would time the compact mode below the threshold: every row runs the dense-masked mode
    # unless its provider switches a layer to compact itself.
    choice.set_default_mode("dense")
    yield
    choice.set_default_mode(None)
