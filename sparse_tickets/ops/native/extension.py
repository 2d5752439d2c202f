"""Building and loading the C++ (CPU) and CUDA extensions of the compact sparse mode.

Both are built with ``torch.utils.cpp_extension`` and ninja on first use, once per machine,
torch version and source content, into a cache directory (``TORCH_EXTENSIONS_DIR`` or torch's
default), with a one-line message while they compile; ``sparse-tickets build`` builds them
ahead of time. The CPU extension needs a C++17 compiler with OpenMP; the CUDA extension
needs nvcc and a CUDA build of torch.

Each is controlled by an environment variable (``SPARSE_TICKETS_CPU_EXTENSION``,
``SPARSE_TICKETS_CUDA_EXTENSION``): ``auto`` (default) builds it when it can and otherwise
leaves the reference backend to serve, with the reason shown by ``sparse_tickets.backends()``;
``skip`` (or ``0``) never builds it; ``force`` (or ``1``) turns a failed build into an error.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import library  # noqa: F401  (defines the op schemas the extensions implement)

SOURCE_ROOT = Path(__file__).resolve().parents[3] / "kernels" / "csrc"

_MODES = {"auto": "auto", "": "auto", "skip": "skip", "0": "skip", "off": "skip",
          "force": "force", "1": "force", "on": "force"}


@dataclass(frozen=True)
class ExtensionSpec:
    kind: str          # "cpu" or "cuda"
    env_var: str
    sources: tuple     # relative to SOURCE_ROOT


CPU = ExtensionSpec("cpu", "SPARSE_TICKETS_CPU_EXTENSION",
                    ("cpu/compact_ops.cpp", "cpu/sparse_conv.cpp"))
CUDA = ExtensionSpec("cuda", "SPARSE_TICKETS_CUDA_EXTENSION",
                     ("cuda/compact_kernels.cu", "cuda/compact_cuda.cpp"))


class ExtensionUnavailable(RuntimeError):
    """An extension cannot be built or loaded here; the message says why, in one line."""


def mode(spec: ExtensionSpec) -> str:
    """``auto``, ``skip`` or ``force``, from the spec's environment variable."""
    raw = os.environ.get(spec.env_var, "auto").strip().lower()
    if raw not in _MODES:
        raise ValueError(f"{spec.env_var}={raw!r}; expected one of auto, skip (0), force (1)")
    return _MODES[raw]


def unavailable_reason(spec: ExtensionSpec) -> Optional[str]:
    """Why ``spec`` cannot be loaded (building it first if needed), or None once it is loaded.

    Under ``force`` a failure raises instead.
    """
    try:
        load(spec)
        return None
    except ExtensionUnavailable as error:
        if mode(spec) == "force":
            raise
        return str(error)


def load(spec: ExtensionSpec) -> None:
    """Build (if not cached) and load ``spec``'s extension; raises ExtensionUnavailable."""
    _load_cached(spec, mode(spec))


@functools.lru_cache(maxsize=None)
def _load_cached(spec: ExtensionSpec, current_mode: str) -> None:
    if current_mode == "skip":
        raise ExtensionUnavailable(f"the {spec.kind} extension is skipped ({spec.env_var}=skip)")
    missing = _missing_prerequisite(spec)
    if missing is not None:
        raise ExtensionUnavailable(missing)
    sources = [str(SOURCE_ROOT / source) for source in spec.sources]
    name = f"sparse_tickets_{spec.kind}_{_fingerprint(spec, sources)}"
    build_directory = _build_root() / name
    build_directory.mkdir(parents=True, exist_ok=True)
    if not any(build_directory.glob(f"{name}*.so")):
        print(f"sparse_tickets: building the {spec.kind} extension (once per machine and "
              f"torch version) in {build_directory}", file=sys.stderr, flush=True)
    from torch.utils import cpp_extension
    try:
        cpp_extension.load(
            name=name, sources=sources, build_directory=str(build_directory),
            extra_cflags=_cxx_flags(), extra_cuda_cflags=_cuda_flags(),
            extra_ldflags=["-fopenmp"] if spec.kind == "cpu" else [],
            is_python_module=False, with_cuda=spec.kind == "cuda", verbose=False)
    except Exception as error:  # a compiler error: keep its last line, the build log has all
        detail = str(error).strip().splitlines()
        raise ExtensionUnavailable(
            f"the {spec.kind} extension failed to build in {build_directory}: "
            f"{detail[-1] if detail else type(error).__name__}") from error


def _missing_prerequisite(spec: ExtensionSpec) -> Optional[str]:
    for source in spec.sources:
        if not (SOURCE_ROOT / source).is_file():
            return f"the {spec.kind} extension's source {source} is missing from {SOURCE_ROOT}"
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler found (set CXX or install g++)"
    if shutil.which("ninja") is None:
        try:
            import ninja  # noqa: F401  (the pip package puts the binary on its own path)
        except ImportError:
            return "ninja is not installed (pip install ninja)"
    if spec.kind == "cuda":
        if torch.version.cuda is None:
            return "this torch build has no CUDA"
        from torch.utils.cpp_extension import CUDA_HOME
        if CUDA_HOME is None:
            return "nvcc not found (set CUDA_HOME)"
    return None


def _cxx_flags() -> list[str]:
    # -march=native: the build is cached per machine (see _fingerprint). No -ffast-math: the
    # kernels must keep IEEE semantics (inf/NaN propagate, no reassociation beyond the loop's).
    # The C++ standard is torch's choice (its headers need what it picks).
    flags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64", "aarch64", "arm64"):
        flags.append("-march=native")
    return flags


def _cuda_flags() -> list[str]:
    return ["-O3"]


def _fingerprint(spec: ExtensionSpec, sources: list[str]) -> str:
    """A short hash of what the binary depends on: the sources, torch, the flags, the CPU."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(Path(source).read_bytes())
    for header in sorted((SOURCE_ROOT / spec.kind).glob("*.h")):  # included by the sources
        digest.update(header.read_bytes())
    digest.update(torch.__version__.encode())
    digest.update(" ".join(_cxx_flags() + _cuda_flags()).encode())
    digest.update(_cpu_identity().encode())
    return digest.hexdigest()[:12]


def _cpu_identity() -> str:
    # -march=native code may not run on another CPU sharing the same cache directory.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build_root() -> Path:
    from torch.utils.cpp_extension import get_default_build_root
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
