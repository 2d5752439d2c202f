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

A failed build is tried once per process and remembered on disk, per build key and compiler
(``failed-<compiler>.json`` in the build directory): the dispatcher asks for the extension
before every call, and a compile error that takes minutes must not cost minutes per optimizer
step, nor per command. A process that meets the failure says so in one line on stderr, naming
the build log; another compiler (``CXX``, or the same path upgraded) or other sources try
again, and ``sparse-tickets build`` retries whatever is remembered.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import sparse_tickets.kernels

from ... import files, settings
from . import (
    build,
    library,  # noqa: F401  (defines the op schemas the extensions implement)
)

SOURCE_ROOT = Path(sparse_tickets.kernels.__file__).resolve().parent / "csrc"

# CPU features that change what -march=native compiles: the instruction set, not the rest of
# /proc/cpuinfo's flags (which differ between hosts of one CPU model and would split the cache).
_ISA_FLAG_PREFIXES = (
    "sse",
    "ssse",
    "avx",
    "fma",
    "f16c",
    "bmi",
    "amx",
    "popcnt",
    "lzcnt",
    "movbe",
    "vnni",
    "neon",
    "asimd",
    "sve",
    "fp16",
    "bf16",
)


@dataclass(frozen=True)
class ExtensionSpec:
    kind: str  # "cpu" or "cuda"
    env_var: str
    sources: tuple  # relative to source_root
    source_root: Path = SOURCE_ROOT

    @property
    def source_paths(self) -> list[Path]:
        return [self.source_root / source for source in self.sources]


CPU = ExtensionSpec(
    "cpu",
    settings.CPU_EXTENSION,
    (
        "cpu/compact_ops.cpp",
        "cpu/sparse_conv.cpp",
        "cpu/conv_batch.cpp",
        "cpu/conv_width.cpp",
        "cpu/compact_autograd.cpp",
    ),
)
CUDA = ExtensionSpec(
    "cuda", settings.CUDA_EXTENSION, ("cuda/compact_kernels.cu", "cuda/compact_cuda.cpp")
)


class ExtensionUnavailable(RuntimeError):
    """An extension cannot be built or loaded here; the message says why, in one line."""


class _BuildFailure(ExtensionUnavailable):
    """The compiler failed, now or in an earlier process (remembered on disk)."""


RETRY_COMMAND = "sparse-tickets build"


def mode(spec: ExtensionSpec) -> str:
    """``auto``, ``skip`` or ``force``, from the spec's environment variable."""
    return settings.extension(spec.env_var)


def unavailable_reason(spec: ExtensionSpec, *, retry: bool = False) -> str | None:
    """Why ``spec`` cannot be loaded (building it first if needed), or None once it is loaded.

    Under ``force`` a failure raises instead. ``retry``: see :func:`build_record`.
    """
    try:
        load(spec, retry=retry)
        return None
    except ExtensionUnavailable as error:
        if mode(spec) == "force":
            raise
        return str(error)


def load(spec: ExtensionSpec, *, retry: bool = False) -> None:
    """Build (if not cached) and load ``spec``'s extension; raises ExtensionUnavailable."""
    build_record(spec, retry=retry)


@dataclass(frozen=True)
class BuildRecord:
    """Where a loaded extension's library lives, and the seconds this process spent building it
    (None: it was already built)."""

    library: Path
    build_seconds: float | None


# What this process got for each (spec, mode): the loaded build, or why there is none. Failures
# are kept as well as successes: the dispatcher asks before every call.
_outcomes: dict[tuple[ExtensionSpec, str], BuildRecord | str] = {}
_outcomes_lock = threading.Lock()


def build_record(spec: ExtensionSpec, *, retry: bool = False) -> BuildRecord:
    """Build (if not cached) and load ``spec``'s extension; raises ExtensionUnavailable.

    Asked once per process; later calls give the same answer. ``retry`` builds again a build
    that failed, in this process or in an earlier one.
    """
    key = (spec, mode(spec))
    outcome = _outcomes.get(key)
    if outcome is None or (retry and isinstance(outcome, str)):
        with _outcomes_lock:  # one attempt, whichever thread asks first
            outcome = _outcomes.get(key)
            if outcome is None or (retry and isinstance(outcome, str)):
                outcome = _outcomes[key] = _attempt(spec, key[1], retry)
    if isinstance(outcome, str):
        raise ExtensionUnavailable(outcome)
    return outcome


def build_directory(spec: ExtensionSpec) -> Path:
    """The directory ``spec``'s build lives in (whether or not it is built yet)."""
    return _build_root() / _build_name(spec)


def failure_record_path(spec: ExtensionSpec) -> Path:
    """Where a failed build of ``spec`` with the current compiler is remembered."""
    return build_directory(spec) / f"failed-{_compiler_key(spec)}.json"


def _attempt(spec: ExtensionSpec, current_mode: str, retry: bool) -> BuildRecord | str:
    try:
        return _load(spec, current_mode, retry)
    except _BuildFailure as error:
        # Said once, here: under force the error itself is the message, and one who retries
        # reports the outcome.
        if current_mode == "auto" and not retry:
            _say(f"{error}; meanwhile the slower reference backend serves")
        return str(error)
    except ExtensionUnavailable as error:
        return str(error)


def _load(spec: ExtensionSpec, current_mode: str, retry: bool) -> BuildRecord:
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
        if not retry:
            _raise_remembered_failure(spec)
        seconds = _build(spec, name, directory, retry)
    library_path = build.library_path(directory, name)
    try:
        torch.ops.load_library(str(library_path))
    except OSError as error:
        raise ExtensionUnavailable(
            f"the {spec.kind} extension in {directory} does not load "
            f"({error}); delete that directory to rebuild it"
        ) from error
    return BuildRecord(library_path, seconds)


def _build(spec: ExtensionSpec, name: str, directory: Path, retry: bool) -> float | None:
    with build.exclusive(directory, announce=_say):
        if build.is_built(directory, name):  # another process built it while we waited
            return None
        if not retry:  # or failed to, while we waited
            _raise_remembered_failure(spec)
        if build.remove_stale_torch_lock(directory):
            _say(f"removed a lock file left in {directory} by a build that was killed")
        _say(
            f"building the {spec.kind} extension on first use, once per machine, torch "
            f"version and kernel sources (about 1-5 minutes on 2 cores) in {directory}"
        )
        started = time.perf_counter()
        try:
            build.compile_in_worker(
                name=name,
                sources=[str(path) for path in spec.source_paths],
                build_directory=directory,
                cxx_flags=_cxx_flags(),
                cuda_flags=_cuda_flags(),
                ld_flags=["-fopenmp"] if spec.kind == "cpu" else [],
                with_cuda=spec.kind == "cuda",
            )
        except build.BuildFailed as error:
            _remember_failure(spec, error)
            raise _BuildFailure(
                f"the {spec.kind} extension failed to build with {_compiler_names(spec)}: "
                f"{error}; `{RETRY_COMMAND}` retries"
            ) from error
        _forget_failures(directory)
        seconds = time.perf_counter() - started
        _say(f"built the {spec.kind} extension in {seconds:.0f} s")
        return seconds


def _raise_remembered_failure(spec: ExtensionSpec) -> None:
    path = failure_record_path(spec)
    try:
        record = json.loads(path.read_text())
        error = str(record["error"])
    except (OSError, ValueError, KeyError, TypeError):  # none, or unreadable: as if none
        return
    raise _BuildFailure(
        f"the {spec.kind} extension failed to build with {_compiler_names(spec)} in an earlier "
        f"run: {error}; not tried again until the compiler or the kernel sources change "
        f"(remembered in {path}), or `{RETRY_COMMAND}` retries"
    )


def _remember_failure(spec: ExtensionSpec, error: build.BuildFailed) -> None:
    record = {
        "compiler": _compiler_identity(spec),
        "error": str(error),
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    data = (json.dumps(record, indent=2) + "\n").encode()
    # Not remembering costs the next process a retry, no more: never hide the build's error.
    with contextlib.suppress(OSError):
        files.write_atomically(failure_record_path(spec), lambda file: file.write(data))


def _forget_failures(directory: Path) -> None:
    # Built now: what failed before, with any compiler, no longer matters.
    for record in directory.glob("failed-*.json"):
        with contextlib.suppress(OSError):
            record.unlink()


def _say(line: str) -> None:
    print(f"sparse_tickets: {line}", file=sys.stderr, flush=True)


def _missing_prerequisite(spec: ExtensionSpec) -> str | None:
    for source, path in zip(spec.sources, spec.source_paths):
        if not path.is_file():
            return f"the {spec.kind} extension's source {source} is missing from {spec.source_root}"
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


def _compilers(spec: ExtensionSpec) -> list[str]:
    """The compilers a build of ``spec`` runs, as named (CXX, then nvcc for CUDA)."""
    compilers = [os.environ.get("CXX", "c++")]
    if spec.kind == "cuda":
        from torch.utils.cpp_extension import CUDA_HOME

        compilers.append(str(Path(CUDA_HOME or "") / "bin" / "nvcc"))
    return compilers


def _compiler_names(spec: ExtensionSpec) -> str:
    return " and ".join(shutil.which(name) or name for name in _compilers(spec))


def _compiler_identity(spec: ExtensionSpec) -> str:
    """Each compiler's real file (through symlinks and alternatives), size and modification
    time: another compiler, or the same path upgraded, is another identity."""
    parts = []
    for name in _compilers(spec):
        real = os.path.realpath(shutil.which(name) or name)
        try:
            status = os.stat(real)
            parts.append(f"{real} {status.st_size} {status.st_mtime_ns}")
        except OSError:
            parts.append(real)
    return "; ".join(parts)


def _compiler_key(spec: ExtensionSpec) -> str:
    return hashlib.sha256(_compiler_identity(spec).encode()).hexdigest()[:12]


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


@functools.cache
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
                features = sorted(
                    flag
                    for flag in line.split(":", 1)[1].split()
                    if flag.startswith(_ISA_FLAG_PREFIXES)
                )
                return f"{machine} {' '.join(features)}"
    except OSError:
        pass
    return f"{machine} {platform.processor()}"


def _build_root() -> Path:
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
