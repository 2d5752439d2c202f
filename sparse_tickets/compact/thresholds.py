"""The density thresholds of ``auto``, from the machine the run is on, measured once and cached.

:func:`machine_thresholds` gives, for a device type and dtype, the density at and below which
``auto`` runs a linear or conv2d layer compact. The first time a process needs them (its first
``auto`` decision for that device type, dtype and thread count), in order:

1. the cache file beside the compiled extension's build (:func:`cache_path`), trusted only when
   its checksum sidecar vouches for its bytes and its key (the build, torch version, thread
   count, device, dtype and calibration method) is this process's;
2. else a measurement (:func:`.calibration.measure_thresholds`: a few seconds, announced in
   one line on stderr), written to that file atomically. Processes that start together (the
   ranks of a distributed run) take a lock beside it, so one measures and the others read its
   result and every rank runs each layer in the same mode;
3. where nothing is measured (``SPARSE_TICKETS_CALIBRATION=off``, or the measurement failed),
   the conservative rule of the instruction set, :data:`DERIVED`.

The answer is kept for the rest of the process: nothing is measured per call or per layer.
Deleting the cache file makes the next process measure again.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from .. import files, settings
from ..ops.native import extension
from . import calibration
from .calibration import KINDS

CALIBRATION_ENV_VAR = settings.CALIBRATION
# Bump when the measurement changes what it measures: older caches are then measured again.
# 2: the steps run the layers' ops and the masked Adam kernel directly.
CALIBRATION_METHOD = 2

# Without a measurement, by the CPU's instruction set (torch.backends.cpu.get_cpu_capability),
# erring towards dense. AVX-512: `python -m benchmarks.threshold` (AMD EPYC, 2 threads) found
# compact linear steps 1.07-1.7x faster at 100% density and 1.2-2.4x at 80%, compact conv2d
# steps (im2col) slower at every density on 2 of 3 shapes; half that density for linear.
# AVX2 (AMD EPYC, 2 threads): the compact kernels win by 2-20x at 90-98% sparsity, but their
# crossover with dense moves with the machine and the layer (the calibration measured 0.5 here
# for both kinds), so without a measurement there is no margin to count on: dense. CUDA, other
# CPUs: dense.
DERIVED = {"AVX512": {"linear": 0.5, "conv2d": 0.0}}
NOT_MEASURED = {"linear": 0.0, "conv2d": 0.0}

_obtained: dict[tuple, dict] = {}


def calibration_mode() -> str:
    """``auto`` (measure once, cache) or ``off`` (the instruction-set rule), from
    ``SPARSE_TICKETS_CALIBRATION``."""
    return settings.calibration()


def machine_thresholds(device_type: str, dtype: torch.dtype = torch.float32) -> dict:
    """``{"linear": density, "conv2d": density}`` for this machine (see the module)."""
    key = (device_type, dtype, torch.get_num_threads(), calibration_mode())
    if key not in _obtained:
        _obtained[key] = _obtain(device_type, dtype)
    return _obtained[key]


def derived(device_type: str) -> dict:
    """The instruction-set rule: the thresholds used where nothing is measured."""
    if device_type != "cpu":
        return dict(NOT_MEASURED)
    return dict(DERIVED.get(torch.backends.cpu.get_cpu_capability(), NOT_MEASURED))


def cache_directory(device_type: str) -> Path | None:
    """The build directory of the extension serving ``device_type``'s compact kernels."""
    spec = {"cpu": extension.CPU, "cuda": extension.CUDA}.get(device_type)
    return None if spec is None else extension.build_directory(spec)


def cache_path(
    directory: Path, device_type: str, dtype: torch.dtype, name: str = "compact-thresholds"
) -> Path:
    return Path(directory) / (
        f"{name}-{_device_slug(device_type)}-"
        f"{_dtype_name(dtype)}-{torch.get_num_threads()}threads.json"
    )


def cache_key(directory: Path, device_type: str, dtype: torch.dtype) -> dict:
    """What the measured thresholds depend on; a cache recorded under another key is stale."""
    return {
        "build": Path(directory).name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": _device_name(device_type),
        "dtype": _dtype_name(dtype),
        "method": CALIBRATION_METHOD,
    }


def cached_or_measured(path: Path, key: dict, measure: Callable[[], dict]) -> dict:
    """The thresholds cached at ``path`` under ``key``, else ``measure()``'s, cached there."""
    path = Path(path)
    cached = read_cache(path, key)
    if cached is not None:
        return cached
    with exclusive(path):
        cached = read_cache(path, key)  # another process may have measured while we waited
        if cached is not None:
            return cached
        print(
            f"sparse_tickets: measuring where compact mode beats dense mode on this machine "
            f"({key['device']}, {key['dtype']}, {key['threads']} threads; once, a few "
            f"seconds), cached in {path}",
            file=sys.stderr,
            flush=True,
        )
        measured = measure()
        try:
            files.write_json(path, {"key": key, **measured})
        except OSError as error:
            print(
                f"sparse_tickets: could not cache the compact-mode thresholds in {path} "
                f"({error.strerror or error}); they will be measured again next time",
                file=sys.stderr,
                flush=True,
            )
    return measured["thresholds"]


def read_cache(path: Path, key: dict) -> dict | None:
    """The thresholds at ``path`` when they are intact, complete and were measured under
    ``key``; None otherwise (missing, corrupted, stale), so they are measured again."""
    try:
        content = files.read_json(path)
    except (OSError, ValueError):  # unreadable, or bytes that are not JSON
        return None
    if not isinstance(content, dict) or content.get("key") != key:
        return None
    thresholds = content.get("thresholds")
    if not isinstance(thresholds, dict) or set(thresholds) != set(KINDS):
        return None
    if not all(
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
        for value in thresholds.values()
    ):
        return None
    return {kind: float(value) for kind, value in thresholds.items()}


def _obtain(device_type: str, dtype: torch.dtype) -> dict:
    if calibration_mode() == "off":
        return derived(device_type)
    directory = cache_directory(device_type)
    if directory is None:
        return derived(device_type)
    try:
        return cached_or_measured(
            cache_path(directory, device_type, dtype),
            cache_key(directory, device_type, dtype),
            lambda: calibration.measure_thresholds(device_type, dtype),
        )
    except Exception as error:  # noqa: BLE001  (any failure: fall back to dense-leaning rule)
        print(
            f"sparse_tickets: measuring the compact-mode thresholds failed "
            f"({type(error).__name__}: {error}); using the instruction-set rule",
            file=sys.stderr,
            flush=True,
        )
        return derived(device_type)


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold a lock file beside ``path`` (POSIX); without one, proceed unlocked."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _device_name(device_type: str) -> str:
    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return device_type


def _device_slug(device_type: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _device_name(device_type).lower()).strip("-")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
