"""``auto``'s threshold for one layer, measured on that layer's own shape and batch.

A kind-wide threshold (:mod:`.thresholds`) is measured on a few stand-in shapes; where compact
beats dense depends on the layer's size, its batch and the machine, so a layer whose training
input shape is known (recorded by its forward in training mode) gets its own: the highest
density at and below which a training step of a layer like it (the same class, geometry,
dtype and input shape: forward, both gradients, a MaskedAdam step) runs at least ``MARGIN``
faster compact than dense, the two modes interleaved, on this machine with the threads this
process uses. The measurement runs once per layer shape and is kept in memory and in a file
beside the compiled extension (``compact-layer-thresholds-<device>-<dtype>-<N>threads.json``,
keyed like the kind-wide cache), under the same lock, so the ranks of a distributed run take
one measurement and agree (:func:`.calibration.measure_layer_threshold` measures).
``SPARSE_TICKETS_CALIBRATION=off`` measures nothing: the kind-wide rule applies.
"""

from __future__ import annotations

import math
import sys

import torch

from .. import files
from . import calibration, thresholds
from .calibration import LayerSpec

# Bump when the per-layer measurement changes what it measures: older entries are measured
# again. 2: the scan's last step refined by bisection. 3: the steps run the layers' ops and
# the masked Adam kernel directly.
LAYER_METHOD = 3

_known: dict = {}


def layer_threshold(spec: LayerSpec, device_type: str, dtype: torch.dtype) -> float | None:
    """The density at and below which compact wins for the layer ``spec`` describes; None when
    nothing is measured here (calibration off, no cache directory, or a failed measurement), so
    the caller falls back to the kind-wide threshold."""
    if thresholds.calibration_mode() == "off":
        return None
    memory_key = (spec.key, device_type, dtype, torch.get_num_threads())
    if memory_key in _known:
        return _known[memory_key]
    directory = thresholds.cache_directory(device_type)
    if directory is None:
        return None
    path = thresholds.cache_path(directory, device_type, dtype, "compact-layer-thresholds")
    key = {**thresholds.cache_key(directory, device_type, dtype), "layer_method": LAYER_METHOD}
    try:
        value = _cached(path, key, spec.key)
        if value is None:
            with thresholds.exclusive(path):
                value = _cached(path, key, spec.key)  # another rank may have measured it
                if value is None:
                    value = _measure_and_store(path, key, spec, device_type, dtype)
    except Exception as error:  # noqa: BLE001  (any failure: the kind-wide rule applies)
        print(
            f"sparse_tickets: measuring the compact-mode threshold of {spec.key} failed "
            f"({type(error).__name__}: {error}); using the kind-wide threshold",
            file=sys.stderr,
            flush=True,
        )
        value = None
    _known[memory_key] = value
    return value


def _measure_and_store(
    path, key: dict, spec: LayerSpec, device_type: str, dtype: torch.dtype
) -> float:
    print(
        f"sparse_tickets: measuring where compact mode beats dense mode for {spec.key} "
        f"({key['threads']} threads; once per layer shape, cached in {path})",
        file=sys.stderr,
        flush=True,
    )
    value = float(calibration.measure_layer_threshold(spec, device_type, dtype))
    layers = dict(_read(path, key))
    layers[spec.key] = value
    try:
        files.write_json(path, {"key": key, "layers": layers})
    except OSError as error:
        print(
            f"sparse_tickets: could not cache the layer thresholds in {path} "
            f"({error.strerror or error}); they will be measured again next time",
            file=sys.stderr,
            flush=True,
        )
    return value


def _cached(path, key: dict, layer_key: str) -> float | None:
    return _read(path, key).get(layer_key)


def _read(path, key: dict) -> dict:
    """The intact entries of the cache at ``path`` recorded under ``key`` (empty otherwise)."""
    try:
        content = files.read_json(path)
    except (OSError, ValueError):
        return {}
    if not isinstance(content, dict) or content.get("key") != key:
        return {}
    layers = content.get("layers")
    if not isinstance(layers, dict):
        return {}
    return {
        name: float(value)
        for name, value in layers.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
    }
