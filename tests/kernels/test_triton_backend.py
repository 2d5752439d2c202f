"""How the triton backend is chosen: only when forced, on a GPU or in the CPU interpreter."""

import importlib.util
import subprocess
import sys

import pytest
import torch

from sparse_tickets import ops
from sparse_tickets.ops.triton_backend import TritonBackend
from tests.conftest import TRITON_IS_REQUIRED

HAS_TRITON = importlib.util.find_spec("triton") is not None
# Required where it has wheels: missing there, these tests fail rather than skip.
needs_triton = pytest.mark.skipif(
    not HAS_TRITON and not TRITON_IS_REQUIRED,
    reason="triton has no wheel for this platform and is not installed",
)


def test_importing_the_package_does_not_import_triton():
    code = "import sys, sparse_tickets; assert 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_triton_is_ahead_of_reference():
    names = ops.registered_names()
    assert names.index("triton") < names.index("reference")


@needs_triton
def test_never_auto_selected_until_measured_on_a_gpu(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv(ops.BACKEND_ENV_VAR, raising=False)
    assert ops.get("triton").not_supported_reasons("masked_linear", [torch.ones(2)]) == []
    assert ops.select("masked_linear", [torch.ones(2)]).name == "reference"
    (row,) = [r for r in ops.backends() if r.name == "triton"]
    assert "only when forced with SPARSE_TICKETS_BACKEND=triton" in str(row)


@needs_triton
def test_forcing_serves_cpu_in_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "triton")
    assert ops.select("masked_linear", [torch.ones(2)]).name == "triton"


@needs_triton
def test_forcing_fails_with_the_reasons(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "triton")
    with pytest.raises(ops.BackendError, match="dtype float64 not supported"):
        ops.select("masked_linear", [torch.ones(2, dtype=torch.float64)])
    with pytest.raises(ops.BackendError, match="tensors are on several devices"):
        ops.select("masked_linear", [torch.ones(2), torch.ones(2, device="meta")])


@needs_triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU makes the backend available")
def test_without_gpu_or_interpreter_the_backend_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    backend = TritonBackend()
    assert backend.unavailable_reason() == "no CUDA GPU and TRITON_INTERPRET is not set"
    assert backend.device_types == frozenset({"cuda"})
    (row,) = [r for r in ops.backends() if r.name == "triton"]
    assert not row.available and row.device_types == ("cuda",)


def test_without_triton_the_backend_says_why():
    # A process in which triton cannot be imported, as where it is not installed.
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "from sparse_tickets.ops.triton_backend import TritonBackend\n"
        "print(TritonBackend().unavailable_reason())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("triton is not installed (pip install triton")


def _shape_only(*shape, dtype=torch.float16):
    """A tensor of ``shape`` with no memory behind it (an expanded scalar)."""
    return torch.zeros((), dtype=dtype).expand(*shape)


@needs_triton
@pytest.mark.parametrize(
    "op,tensors",
    [
        # An input past 2^31 elements.
        (
            "masked_linear",
            [
                _shape_only(65536, 32769),
                _shape_only(8, 32769),
                _shape_only(8, 32769, dtype=torch.bool),
            ],
        ),
        # Inputs under 2^31, the output of 65,536 x 50,304 past it.
        (
            "masked_linear",
            [
                _shape_only(65536, 64),
                _shape_only(50304, 64),
                _shape_only(50304, 64, dtype=torch.bool),
            ],
        ),
        # An input of 2^28 elements, its im2col buffer (64 x 254 x 254 rows x 576) past 2^31.
        (
            "masked_conv2d",
            [
                _shape_only(64, 64, 256, 256),
                _shape_only(64, 64, 3, 3),
                _shape_only(64, 64, 3, 3, dtype=torch.bool),
            ],
        ),
    ],
    ids=["input", "output", "im2col"],
)
def test_tensors_past_2_31_elements_are_served(op, tensors, monkeypatch):
    # The kernels' offsets are 64-bit (tests/kernels/test_masked_matmul.py runs them past
    # 2^31): no size is a reason to refuse.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert TritonBackend().not_supported_reasons(op, tensors) == []
