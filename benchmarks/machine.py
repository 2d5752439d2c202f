"""What a result was measured on: device, threads, versions, commit; and the folder name
(``device slug``) its results are filed under."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo ("unknown cpu" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown cpu"


def vector_isa() -> str:
    """The widest x86 vector instruction set the CPU has ("avx512", "avx2"; "" for others):
    one CPU model name covers hosts with and without AVX-512, and the kernels differ."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else ""
    except OSError:
        pass
    return ""


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    isa = vector_isa()
    return f"{cpu_model()} ({isa.upper()})" if isa else cpu_model()


def device_slug(device: str) -> str:
    """``cpu-<model>-<isa>-<n>threads`` or the GPU's name, as a lowercase folder name."""
    name = device_name(device)
    if device == "cpu":
        name = f"cpu-{name}-{torch.get_num_threads()}threads"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "not installed"
    return triton.__version__


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def describe(device: str) -> dict:
    """The machine fields every result file records."""
    return {
        "bench_device": device,
        "device_name": device_name(device),
        "device_slug": device_slug(device),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "triton_version": triton_version(),
        "git_commit": git_commit(),
    }
