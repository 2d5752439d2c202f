"""Measuring, on the machine the run is on, the density below which compact mode trains faster.

The unit is one training step of a single masked layer (forward, the input and weight
gradients, a MaskedAdam step), timed in dense mode and in compact mode on the same data. The two
modes' steps are interleaved, one of each per pair, and a point's speedup is the median of the
pairs' dense/compact ratios: load that comes and goes on a shared machine hits both modes of a
pair alike, and a stray slow step moves the median little.

:func:`measure_thresholds` is the short calibration behind ``auto`` (a few seconds, see
:mod:`sparse_tickets.compact.thresholds`, which the package hands this function to): a couple of small layer shapes per kind, densities from the lowest up,
stopping at the first density where compact does not win on every shape, because the
threshold is the highest density at and below which it wins everywhere. Compact must win by
``MARGIN``: a tie, or noise that looks like a small win, leaves the layer dense.
``python -m benchmarks.threshold`` runs the same steps over every density and larger shapes.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..compact.choice import default_mode_set_to
from ..compact.layer_thresholds import LayerSpec
from ..compact.thresholds import KINDS
from ..optim import MaskedAdam
from .layers import MaskedConv2d, MaskedLinear

# (batch, in_features, out_features): LeNet-300-100's hidden layers at the paper's batch; the
# smaller one is where per-call overhead weighs most, so the threshold errs towards dense.
LINEAR_SHAPES = ((60, 784, 300), (60, 300, 100))
# (batch, in_channels, out_channels, image side), 3x3 kernel, padding 1: a ResNet-20-like layer
# and a Conv-6-like one, at a batch that keeps a step in milliseconds.
CONV2D_SHAPES = ((16, 16, 16, 16), (16, 64, 64, 8))
SHAPES = {"linear": LINEAR_SHAPES, "conv2d": CONV2D_SHAPES}
DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
PAIRS = 5
# Seconds one kind's scan may take after its first density: on a loaded machine the scan stops
# early, which only lowers the threshold (the densities not reached stay dense).
BUDGET_S = 5.0
# Compact runs a layer only when its step is at least this much faster than dense mode's.
MARGIN = 1.1


def training_step(kind: str, shape: Sequence[int], density: float, mode: str,
                  device: str = "cpu", dtype: torch.dtype = torch.float32,
                  seed: int = 0) -> Callable[[], None]:
    """One training step of a masked ``kind`` layer of ``shape`` at ``density`` in ``mode``
    (``"dense"`` or ``"compact"``), as a function to call; the same ``seed`` gives the same
    layer, mask and data in either mode."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "linear":
        batch, fan_in, fan_out = shape
        layer = MaskedLinear(fan_in, fan_out)
        x = torch.randn(batch, fan_in, generator=generator)
    elif kind == "conv2d":
        batch, channels_in, channels_out, side = shape
        layer = MaskedConv2d(channels_in, channels_out, 3, padding=1)
        x = torch.randn(batch, channels_in, side, side, generator=generator)
    else:
        raise ValueError(f"layer kind {kind!r} is not one of {', '.join(KINDS)}")
    return _step_of(layer, x, density, mode, device, dtype, generator)


def _step_of(layer, x: torch.Tensor, density: float, mode: str, device: str,
             dtype: torch.dtype, generator: torch.Generator) -> Callable[[], None]:
    layer = layer.to(device=device, dtype=dtype)
    layer.set_mask((torch.rand(layer.mask.shape, generator=generator) < density).to(device))
    layer.set_mode(mode)
    optimizer = MaskedAdam(layer.parameters(), lr=1e-3, masks=layer)
    x = x.to(device=device, dtype=dtype)
    with torch.no_grad():
        target = torch.randn(layer(x).shape, generator=generator).to(device=device, dtype=dtype)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(layer(x), target).backward()
        optimizer.step()

    return step


def interleaved_times(steps: dict[str, Callable[[], None]], repeats: int,
                      device: str = "cpu") -> dict[str, list[float]]:
    """Seconds of each of ``steps``, ``repeats`` times, one of each in turn (after one
    warm-up call each: state allocation, kernel selection)."""
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else None
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if synchronize:
                synchronize()
            start = time.perf_counter()
            step()
            if synchronize:
                synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def compare(kind: str, shape: Sequence[int], density: float, device: str = "cpu",
            dtype: torch.dtype = torch.float32, pairs: int = PAIRS) -> dict:
    """A row: median dense and compact step seconds of one point, and compact's speedup (the
    median of the pairs' ratios)."""
    with measuring(device):
        times = interleaved_times(
            {mode: training_step(kind, shape, density, mode, device, dtype)
             for mode in ("dense", "compact")}, pairs, device)
    ratios = [dense / compact for dense, compact in zip(times["dense"], times["compact"])]
    return {"kind": kind, "shape": list(shape), "density": density,
            "dense_s": statistics.median(times["dense"]),
            "compact_s": statistics.median(times["compact"]),
            "speedup": statistics.median(ratios)}


def compact_wins(row: dict, margin: float = MARGIN) -> bool:
    return row["speedup"] >= margin


def threshold_from(rows: Iterable[dict], margin: float = MARGIN) -> float:
    """The highest measured density at and below which compact wins on every shape measured
    there (0.0 when it does not win at the lowest)."""
    wins = {}
    for row in rows:
        wins.setdefault(row["density"], []).append(compact_wins(row, margin))
    threshold = 0.0
    for density in sorted(wins):
        if not all(wins[density]):
            break
        threshold = density
    return threshold


def measure_thresholds(device: str = "cpu", dtype: torch.dtype = torch.float32,
                       shapes: Optional[dict] = None, densities: Optional[Sequence[float]] = None,
                       pairs: int = PAIRS, margin: float = MARGIN,
                       budget_s: float = BUDGET_S) -> dict:
    """``{"thresholds": {kind: density}, "rows": [...], "seconds": ...}`` for this machine,
    the threads this process uses, ``device`` and ``dtype`` (``shapes`` by kind and
    ``densities`` default to :data:`SHAPES` and :data:`DENSITIES`); stops each kind at its
    first losing density, or once its scan has taken ``budget_s`` past its first density."""
    shapes = SHAPES if shapes is None else shapes
    densities = DENSITIES if densities is None else densities
    start = time.perf_counter()
    rows, thresholds = [], {}
    for kind in KINDS:
        kind_rows, deadline = [], None
        for density in sorted(densities):
            point = [compare(kind, shape, density, device, dtype, pairs)
                     for shape in shapes[kind]]
            kind_rows += point
            if not all(compact_wins(row, margin) for row in point):
                break
            # The budget runs from the end of the first point: one-time costs (imports, the
            # first optimizer) must not cut a scan short.
            if deadline is None:
                deadline = time.perf_counter() + budget_s
            elif time.perf_counter() > deadline:
                break
        thresholds[kind] = threshold_from(kind_rows, margin)
        rows += kind_rows
    return {"thresholds": thresholds, "rows": rows, "seconds": time.perf_counter() - start}


# A layer's own scan (layer_thresholds): finer steps, since its threshold is used as it is.
LAYER_DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0)
_LAYER_CLASSES = {"linear": MaskedLinear, "conv2d": MaskedConv2d}


def layer_training_step(spec: LayerSpec, density: float, mode: str, device: str = "cpu",
                        dtype: torch.dtype = torch.float32,
                        seed: int = 0) -> Callable[[], None]:
    """One training step of a layer as ``spec`` describes it (its class, geometry and input
    shape) at ``density`` in ``mode``."""
    generator = torch.Generator().manual_seed(seed)
    layer = _LAYER_CLASSES[spec.kind](**dict(spec.arguments))
    x = torch.randn(spec.input_shape, generator=generator)
    return _step_of(layer, x, density, mode, device, dtype, generator)


# Halvings of the gap between the last winning and the first losing density of the scan.
LAYER_BISECTIONS = 2


def measure_layer_threshold(spec: LayerSpec, device_type: str = "cpu",
                            dtype: torch.dtype = torch.float32, pairs: int = PAIRS,
                            margin: float = MARGIN, budget_s: float = BUDGET_S) -> float:
    """The highest density at and below which compact wins by ``margin`` for the layer
    ``spec`` describes (0.0 when it loses at the lowest of :data:`LAYER_DENSITIES`): the scan
    stops at the first loss (or once it has taken ``budget_s`` past its first density), then
    :data:`LAYER_BISECTIONS` halvings of the gap to that loss refine it, since an IMP level's
    density rarely falls on a scanned one (LeNet's 51.2% between 50 and 70%)."""

    def compact_wins_at(density: float) -> bool:
        with measuring(device_type):
            times = interleaved_times(
                {mode: layer_training_step(spec, density, mode, device_type, dtype)
                 for mode in ("dense", "compact")}, pairs, device_type)
        ratios = [dense / compact for dense, compact in zip(times["dense"], times["compact"])]
        return statistics.median(ratios) >= margin

    threshold, loss, deadline = 0.0, None, None
    for density in LAYER_DENSITIES:
        if not compact_wins_at(density):
            loss = density
            break
        threshold = density
        if deadline is None:
            deadline = time.perf_counter() + budget_s
        elif time.perf_counter() > deadline:
            return threshold
    if loss is None or threshold == 0.0:
        return threshold
    for _ in range(LAYER_BISECTIONS):
        middle = round((threshold + loss) / 2, 4)
        if compact_wins_at(middle):
            threshold = middle
        else:
            loss = middle
    return threshold


@contextlib.contextmanager
def measuring(device: str):
    """Whatever context a mask change happens in (no_grad, inference mode, autocast, a seeded
    run, a default mode of "auto"), the measurement trains normally and leaves the caller's
    random streams untouched. The layers it builds follow the default mode "dense" until they
    are set to the mode they time: under "auto" their own mask changes would ask for the
    thresholds being measured, and wait on this measurement forever."""
    device_type = torch.device(device).type
    devices = [torch.cuda.current_device()] if device_type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False), \
            torch.enable_grad(), torch.autocast(device_type, enabled=False), \
            default_mode_set_to("dense"):
        yield
