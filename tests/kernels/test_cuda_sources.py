"""The CUDA sources compile with nvcc for sm_80 and sm_90, and stay free of torch headers.

A compile check that needs no GPU, so CUDA code that does not build never lands: every .cu file
under kernels/csrc/cuda is compiled (both architectures in one nvcc call) with the defines
torch.utils.cpp_extension gives nvcc, such as __CUDA_NO_HALF_CONVERSIONS__, so a source that
only builds without them fails here and not on the GPU machine. Without nvcc on PATH the
compile tests skip, except under CI=true, where they fail. The binding (compact_cuda.cpp)
needs a CUDA build of torch and is built only on a GPU machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CUDA_SOURCE_DIR = Path(__file__).resolve().parents[2] / "kernels" / "csrc" / "cuda"
KERNEL_SOURCES = sorted(CUDA_SOURCE_DIR.glob("*.cu"))
TORCH_FREE_SOURCES = sorted([*KERNEL_SOURCES, *CUDA_SOURCE_DIR.glob("*.cuh")])

ARCHITECTURES = ("80", "90")
# What torch.utils.cpp_extension adds to every nvcc command line (its COMMON_NVCC_FLAGS).
TORCH_NVCC_FLAGS = (
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
)
COMPILE_TIMEOUT_S = 600

_TORCH_INCLUDE = re.compile(r"^\s*#\s*include\s*[<\"](torch|ATen|c10)/", re.MULTILINE)


def nvcc_command(nvcc: str, source: Path, output: Path) -> list[str]:
    """The compile-check command line for one source file."""
    gencode = [
        flag
        for arch in ARCHITECTURES
        for flag in ("-gencode", f"arch=compute_{arch},code=sm_{arch}")
    ]
    # --threads 0: the architectures compile side by side, one per core.
    return [
        nvcc,
        *gencode,
        "--threads",
        "0",
        "-std=c++17",
        "-O3",
        *TORCH_NVCC_FLAGS,
        "-c",
        str(source),
        "-o",
        str(output),
    ]


def _nvcc_or_skip() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "nvcc is not on PATH and CI=true: CI must compile the CUDA sources "
                "(install the CUDA toolkit or put its bin/ on PATH)",
                pytrace=False,
            )
        pytest.skip("nvcc is not on PATH (the CUDA sources are compile-checked where it is)")
    return nvcc


def test_the_cuda_sources_are_there():
    assert CUDA_SOURCE_DIR / "compact_kernels.cu" in KERNEL_SOURCES
    assert (CUDA_SOURCE_DIR / "compact_kernels.cuh").is_file()
    assert (CUDA_SOURCE_DIR / "compact_cuda.cpp").is_file()


@pytest.mark.parametrize("source", KERNEL_SOURCES, ids=lambda path: path.name)
def test_cuda_source_compiles_for_sm80_and_sm90(source, tmp_path):
    command = nvcc_command(_nvcc_or_skip(), source, tmp_path / f"{source.stem}.o")
    result = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    if result.returncode != 0:
        pytest.fail(
            f"nvcc failed to compile {source.name} (exit {result.returncode}):\n"
            f"{' '.join(command)}\n{result.stderr}",
            pytrace=False,
        )


@pytest.mark.parametrize("source", TORCH_FREE_SOURCES, ids=lambda path: path.name)
def test_cuda_source_includes_no_torch_header(source):
    # The CPU torch wheel's headers cannot compile c10/cuda code: torch stays in the binding.
    included = [
        match.group(0).strip()
        for match in _TORCH_INCLUDE.finditer(source.read_text(encoding="utf-8"))
    ]
    assert not included, f"{source.name} includes torch headers: {included}"
