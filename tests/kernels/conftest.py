"""Run the Triton kernels compiled on a GPU, or in triton's CPU interpreter without one.

The interpreter is chosen when triton is imported, so ``TRITON_INTERPRET=1`` is set here, before
any test module of this directory imports triton (no other test module imports it). If triton
was imported earlier without it on a machine with no GPU, these tests fail and say why: the
kernels would not run, and a skip would hide that.
"""

import os
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()
_IMPORTED_TOO_EARLY = (
    not CUDA and "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
)
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture
def kernel_device():
    """Where the kernels run: the GPU (compiled) when there is one, else the CPU (interpreted)."""
    return "cuda" if CUDA else "cpu"


@pytest.fixture(autouse=True)
def _interpreter_in_effect():
    if _IMPORTED_TOO_EARLY:
        pytest.fail(
            "triton was imported before tests/kernels/conftest.py could set "
            "TRITON_INTERPRET=1 (a module collected earlier imports it): the kernels "
            "cannot run here; run tests/kernels on their own",
            pytrace=False,
        )
