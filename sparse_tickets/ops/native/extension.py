"""Building and loading the C++ (CPU) and CUDA extensions of the compact sparse mode.

Both are built with ``torch.utils.cpp_extension`` and ninja on first use, once per machine,
torch version and source content, into a cache directory (``TORCH_EXTENSIONS_DIR`` or torch's
default), saying so on stderr in one line before the compiler starts (a first build takes
about 1-5 minutes on 2 cores); ``sparse-tickets build`` builds them ahead of time and says
where and how long. The CPU extension needs a C++17 compiler with OpenMP; the CUDA extension
needs nvcc and a CUDA build of torch. How a build stays safe (one builder at a time, no stale
lock, no orphaned compiler, no torn library loaded) is :mod:`.build`'s job.

A build is cached under a name keyed on what determines the binary: every source file of its
kind, the compiler flags, the torch version and C++ ABI, and the CPU's instruction set (the
code is compiled for the machine). Neither the ninja nor the environment that built it is in
the key, and a finished build is loaded without running ninja again, so environments with the
same torch share one build and never rebuild each other's.

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

import sparse_tickets.kernels

from . import build
from . import library  # noqa: F401  (defines the op schemas the extensions implement)

SOURCE_ROOT = Path(sparse_tickets.kernels.__file__).resolve().parent / "csrc"

# CPU features that change what -march=native compiles: the instruction set, not the rest of
# /proc/cpuinfo's flags (which differ between hosts of one CPU model and would split the cache).
_ISA_FLAG_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "bmi", "amx", "popcnt", "lzcnt",
                      "movbe", "vnni", "neon", "asimd", "sve", "fp16", "bf16")

_MODES = {"auto": "auto", "": "auto", "skip": "skip", "0": "skip", "off": "skip",
          "force": "force", "1": "force", "on": "force"}


@dataclass(frozen=True)
class ExtensionSpec:
    kind: str          # "cpu" or "cuda"
    env_var: str
    sources: tuple     # relative to source_root
    source_root: Path = SOURCE_ROOT

    @property
    def source_paths(self) -> list[Path]:
        return [self.source_root / source for source in self.sources]


CPU = ExtensionSpec("cpu", "SPARSE_TICKETS_CPU_EXTENSION",
                    ("cpu/compact_ops.cpp", "cpu/sparse_conv.cpp",
                     "cpu/compact_autograd.cpp"))
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
    build_record(spec)


@dataclass(frozen=True)
class BuildRecord:
    """Where a loaded extension's library lives, and the seconds this process spent building it
    (None: it was already built)."""
    library: Path
    build_seconds: Optional[float]


def build_record(spec: ExtensionSpec) -> BuildRecord:
    """Build (if not cached) and load ``spec``'s extension; raises ExtensionUnavailable."""
    return _load_cached(spec, mode(spec))


def build_directory(spec: ExtensionSpec) -> Path:
    """The directory ``spec``'s build lives in (whether or not it is built yet)."""
    return _build_root() / _build_name(spec)


@functools.lru_cache(maxsize=None)
def _load_cached(spec: ExtensionSpec, current_mode: str) -> BuildRecord:
    if current_mode == "skip":
        raise ExtensionUnavailable(f"the {spec.kind} extension is skipped ({spec.env_var}=skip)")
    missing = _missing_prerequisite(spec)
    if missing is not None:
        raise ExtensionUnavailable(missing)
    name = _build_name(spec)
    directory = build_directory(spec)
    directory.mkdir(parents=True, exist_ok=True)
    seconds = None
    if not build.is_built(directory, name):
        seconds = _build(spec, name, directory)
    library_path = build.library_path(directory, name)
    try:
        torch.ops.load_library(str(library_path))
    except OSError as error:
        raise ExtensionUnavailable(f"the {spec.kind} extension in {directory} does not load "
                                   f"({error}); delete that directory to rebuild it") from error
    return BuildRecord(library_path, seconds)


def _build(spec: ExtensionSpec, name: str, directory: Path) -> Optional[float]:
    with build.exclusive(directory, announce=_say):
        if build.is_built(directory, name):  # another process built it while we waited
            return None
        if build.remove_stale_torch_lock(directory):
            _say(f"removed a lock file left in {directory} by a build that was killed")
        _say(f"building the {spec.kind} extension on first use, once per machine, torch "
             f"version and kernel sources (about 1-5 minutes on 2 cores) in {directory}")
        started = time.perf_counter()
        try:
            build.compile_in_worker(
                name=name, sources=[str(path) for path in spec.source_paths],
                build_directory=directory, cxx_flags=_cxx_flags(), cuda_flags=_cuda_flags(),
                ld_flags=["-fopenmp"] if spec.kind == "cpu" else [],
                with_cuda=spec.kind == "cuda")
        except build.BuildFailed as error:
            raise ExtensionUnavailable(
                f"the {spec.kind} extension failed to build in {directory}: {error}") from error
        seconds = time.perf_counter() - started
        _say(f"built the {spec.kind} extension in {seconds:.0f} s")
        return seconds


def _say(line: str) -> None:
    print(f"sparse_tickets: {line}", file=sys.stderr, flush=True)


def _missing_prerequisite(spec: ExtensionSpec) -> Optional[str]:
    for source, path in zip(spec.sources, spec.source_paths):
        if not path.is_file():
            return (f"the {spec.kind} extension's source {source} is missing from "
                    f"{spec.source_root}")
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


def _build_name(spec: ExtensionSpec) -> str:
    return f"sparse_tickets_{spec.kind}_{_fingerprint(spec)}"


@functools.lru_cache(maxsize=None)
def _fingerprint(spec: ExtensionSpec) -> str:
    """A short hash of what the binary depends on: the sources, torch, the flags, the CPU."""
    digest = hashlib.sha256()
    # Every file of the kind's directory, headers included, not only the compiled units.
    directories = sorted({path.parent for path in spec.source_paths})
    for path in sorted(p for d in directories if d.is_dir() for p in d.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(torch.__version__.encode())
    digest.update(str(torch._C._GLIBCXX_USE_CXX11_ABI).encode())
    digest.update(" ".join(_cxx_flags() + _cuda_flags()).encode())
    digest.update(_cpu_identity().encode())
    return digest.hexdigest()[:12]


def _cpu_identity() -> str:
    # -march=native code may not run on another CPU sharing the same cache directory.
    machine = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                features = sorted(flag for flag in line.split(":", 1)[1].split()
                                  if flag.startswith(_ISA_FLAG_PREFIXES))
                return f"{machine} {' '.join(features)}"
    except OSError:
        pass
    return f"{machine} {platform.processor()}"


def _build_root() -> Path:
    from torch.utils.cpp_extension import get_default_build_root
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
