"""Measuring, on the machine the run is on, the density below which compact mode trains faster.

The unit is one training step of a single masked layer (forward, the input and weight
gradients, an Adam step), timed in dense mode and in compact mode on the same data. A step runs
the ops a masked layer runs in that mode (:func:`~sparse_tickets.functional.masked_linear` on
the dense weight and its mask, :func:`~sparse_tickets.functional.compact_linear` on the kept
values and their index; the conv2d likewise) and the fused masked Adam step of the backend
:class:`~sparse_tickets.optim.MaskedAdam` selects, on the tensors that optimizer would step: the
kernels are the layer's and the optimizer's, while the measurement stays below the layers it
serves (:mod:`.choice` asks for it at a layer's mask change). The two modes' steps are
interleaved, one of each per pair, and a point's speedup is the median of the pairs'
dense/compact ratios: load that comes and goes on a shared machine hits both modes of a pair
alike, and a stray slow step moves the median little.

:func:`measure_thresholds` is the short calibration behind ``auto`` (a few seconds, see
:mod:`.thresholds`): a couple of small layer shapes per kind, densities from the lowest up,
stopping at the first density where compact does not win on every shape, because the
threshold is the highest density at and below which it wins everywhere. Compact must win by
``MARGIN``: a tie, or noise that looks like a small win, leaves the layer dense.
:func:`measure_layer_threshold` measures one layer's own shape (see :mod:`.layer_thresholds`).
``python -m benchmarks.threshold`` runs the same steps over every density and larger shapes.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import functional, ops
from ..formats import CompactIndex

# The kinds of layer a threshold is kept for.
KINDS = ("linear", "conv2d")


@dataclass(frozen=True)
class LayerSpec:
    """What a layer's step costs depend on: its kind ("linear" or "conv2d"), its constructor's
    arguments (``(name, value)`` pairs, those of ``nn.Linear`` / ``nn.Conv2d``) and the shape
    of its training input."""

    kind: str
    arguments: tuple
    input_shape: tuple

    @property
    def key(self) -> str:
        arguments = ", ".join(f"{name}={value}" for name, value in self.arguments)
        return f"{self.kind}({arguments}) input {list(self.input_shape)}"


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


def training_step(
    kind: str,
    shape: Sequence[int],
    density: float,
    mode: str,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Callable[[], None]:
    """One training step of a masked ``kind`` layer of ``shape`` at ``density`` in ``mode``
    (``"dense"`` or ``"compact"``), as a function to call; the same ``seed`` gives the same
    layer, mask and data in either mode."""
    return layer_training_step(stand_in(kind, shape), density, mode, device, dtype, seed)


def stand_in(kind: str, shape: Sequence[int]) -> LayerSpec:
    """The layer a kind-wide ``shape`` of :data:`SHAPES` stands for: ``(batch, in_features,
    out_features)`` for a linear, ``(batch, in_channels, out_channels, image side)`` for a 3x3
    conv2d with padding 1."""
    if kind == "linear":
        batch, fan_in, fan_out = shape
        return LayerSpec(
            kind, (("in_features", fan_in), ("out_features", fan_out)), (batch, fan_in)
        )
    if kind == "conv2d":
        batch, channels_in, channels_out, side = shape
        return LayerSpec(
            kind,
            (
                ("in_channels", channels_in),
                ("out_channels", channels_out),
                ("kernel_size", 3),
                ("padding", 1),
            ),
            (batch, channels_in, side, side),
        )
    raise ValueError(f"layer kind {kind!r} is not one of {', '.join(KINDS)}")


_GEOMETRIES = {"linear": nn.Linear, "conv2d": nn.Conv2d}


def layer_training_step(
    spec: LayerSpec,
    density: float,
    mode: str,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Callable[[], None]:
    """One training step of a layer as ``spec`` describes it (its kind, geometry and input
    shape) at ``density`` in ``mode`` (``"dense"`` or ``"compact"``), as a function to call;
    the same ``seed`` gives the same weights, mask and data in either mode."""
    if spec.kind not in _GEOMETRIES:
        raise ValueError(f"layer kind {spec.kind!r} is not one of {', '.join(KINDS)}")
    # The torch layer of the spec's arguments, on meta: its shapes and geometry, no storage.
    geometry = _GEOMETRIES[spec.kind](**dict(spec.arguments), device="meta")
    generator = torch.Generator().manual_seed(seed)

    def tensor(shape) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)

    weight = tensor(geometry.weight.shape)
    mask = (torch.rand(weight.shape, generator=generator) < density).to(device)
    bias = None if geometry.bias is None else nn.Parameter(tensor(geometry.bias.shape))
    x = tensor(spec.input_shape)
    if mode == "compact":
        index = CompactIndex.from_mask(mask)
        trained = nn.Parameter(index.gather(weight))
        forward = _compact_forward(geometry, trained, index, bias)
        masks = [None, None]  # the values are all kept weights
    elif mode == "dense":
        trained = nn.Parameter(weight.masked_fill(~mask, 0.0))
        forward = _dense_forward(geometry, trained, mask, bias)
        masks = [mask, None]
    else:
        raise ValueError(f"mode {mode!r} is not one of dense, compact")
    parameters = [trained] if bias is None else [trained, bias]
    adam = _AdamStep(parameters, masks[: len(parameters)])
    with torch.no_grad():
        target = tensor(forward(x).shape)

    def step() -> None:
        for parameter in parameters:
            parameter.grad = None
        F.mse_loss(forward(x), target).backward()
        adam.step()

    return step


def _dense_forward(geometry: nn.Module, weight, mask, bias) -> Callable:
    # What MaskedLinear / MaskedConv2d run in dense mode.
    if isinstance(geometry, nn.Linear):
        return lambda x: functional.masked_linear(x, weight, mask, bias)

    def forward(x):
        x, padding = functional.padded_by_mode(x, geometry)
        return functional.masked_conv2d(
            x, weight, mask, bias, geometry.stride, padding, geometry.dilation, geometry.groups
        )

    return forward


def _compact_forward(geometry: nn.Module, values, index, bias) -> Callable:
    # What MaskedLinear / MaskedConv2d run in compact mode (the conv's variant by its rule).
    if isinstance(geometry, nn.Linear):
        return lambda x: functional.compact_linear(x, values, index, bias)

    def forward(x):
        x, padding = functional.padded_by_mode(x, geometry)
        return functional.compact_conv2d(
            x, values, index, bias, geometry.stride, padding, geometry.dilation, geometry.groups
        )

    return forward


class _AdamStep:
    """The step :class:`~sparse_tickets.optim.MaskedAdam` takes with its defaults on
    ``parameters`` (each with its mask, None for an unmasked one): the same backend, selected
    at each step, and the same fused kernel on the same state tensors."""

    def __init__(self, parameters: list, masks: list) -> None:
        self.parameters, self.masks = parameters, masks
        self.exp_avgs = [torch.zeros_like(p) for p in parameters]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in parameters]
        self.steps = [torch.tensor(0.0) for _ in parameters]

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.parameters]
        backend = ops.select(
            "masked_adam_step",
            [*self.parameters, *grads, *self.masks, *self.exp_avgs, *self.exp_avg_sqs],
        )
        backend.masked_adam_step(
            self.parameters,
            grads,
            self.masks,
            self.exp_avgs,
            self.exp_avg_sqs,
            [],
            self.steps,
            amsgrad=False,
            beta1=0.9,
            beta2=0.999,
            lr=1e-3,
            weight_decay=0.0,
            eps=1e-8,
            maximize=False,
            decoupled_weight_decay=False,
        )


def interleaved_times(
    steps: dict[str, Callable[[], None]], repeats: int, device: str = "cpu"
) -> dict[str, list[float]]:
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


def compare(
    kind: str,
    shape: Sequence[int],
    density: float,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    pairs: int = PAIRS,
) -> dict:
    """A row: median dense and compact step seconds of one point, and compact's speedup (the
    median of the pairs' ratios)."""
    with measuring(device):
        times = interleaved_times(
            {
                mode: training_step(kind, shape, density, mode, device, dtype)
                for mode in ("dense", "compact")
            },
            pairs,
            device,
        )
    ratios = [dense / compact for dense, compact in zip(times["dense"], times["compact"])]
    return {
        "kind": kind,
        "shape": list(shape),
        "density": density,
        "dense_s": statistics.median(times["dense"]),
        "compact_s": statistics.median(times["compact"]),
        "speedup": statistics.median(ratios),
    }


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


def measure_thresholds(
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    shapes: dict | None = None,
    densities: Sequence[float] | None = None,
    pairs: int = PAIRS,
    margin: float = MARGIN,
    budget_s: float = BUDGET_S,
) -> dict:
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
            point = [compare(kind, shape, density, device, dtype, pairs) for shape in shapes[kind]]
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


# Halvings of the gap between the last winning and the first losing density of the scan.
LAYER_BISECTIONS = 2


def measure_layer_threshold(
    spec: LayerSpec,
    device_type: str = "cpu",
    dtype: torch.dtype = torch.float32,
    pairs: int = PAIRS,
    margin: float = MARGIN,
    budget_s: float = BUDGET_S,
) -> float:
    """The highest density at and below which compact wins by ``margin`` for the layer
    ``spec`` describes (0.0 when it loses at the lowest of :data:`LAYER_DENSITIES`): the scan
    stops at the first loss (or once it has taken ``budget_s`` past its first density), then
    :data:`LAYER_BISECTIONS` halvings of the gap to that loss refine it, since an IMP level's
    density rarely falls on a scanned one (LeNet's 51.2% between 50 and 70%)."""

    def compact_wins_at(density: float) -> bool:
        with measuring(device_type):
            times = interleaved_times(
                {
                    mode: layer_training_step(spec, density, mode, device_type, dtype)
                    for mode in ("dense", "compact")
                },
                pairs,
                device_type,
            )
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
    run), the measurement trains normally and leaves the caller's random streams untouched."""
    device_type = torch.device(device).type
    devices = [torch.cuda.current_device()] if device_type == "cuda" else []
    with (
        torch.random.fork_rng(devices=devices),
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.autocast(device_type, enabled=False),
    ):
        yield
