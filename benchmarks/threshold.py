"""Measure the density below which a compact layer trains faster than a dense-masked one.

One training step (forward, backward, MaskedAdam step) of a single masked layer, in dense mode
and in compact mode, at falling densities: linear layers of the paper's LeNet-300-100 and a
4096x4096 layer; conv layers of ResNet-20 and Conv-6. For each kind (linear, conv2d) the
threshold is the highest density at and below which compact wins on every shape of the kind; ``sparse_tickets.compact.choice.COMPACT_BELOW`` holds the value measured
on the reference machine, and ``SPARSE_TICKETS_COMPACT_BELOW`` sets another one.

    python -m benchmarks.threshold [--device cpu|cuda] [--output DIR]

prints the table and writes ``threshold.json`` under ``benchmarks/results/<device>/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.machine import REPO_ROOT, device_name, device_slug
from sparse_tickets import MaskedConv2d, MaskedLinear
from sparse_tickets.optim import MaskedAdam

# linear: (batch, in_features, out_features); conv2d: (batch, in, out, image side), 3x3, pad 1
SHAPES = {"linear": [(60, 784, 300), (60, 300, 100), (64, 4096, 4096)],
          "conv2d": [(32, 16, 16, 32), (16, 64, 64, 32), (16, 256, 256, 8)]}
DENSITIES = [1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.02]


def _layer_and_input(kind: str, shape, generator):
    if kind == "linear":
        batch, fan_in, fan_out = shape
        return MaskedLinear(fan_in, fan_out), torch.randn(batch, fan_in, generator=generator)
    batch, channels_in, channels_out, side = shape
    return (MaskedConv2d(channels_in, channels_out, 3, padding=1),
            torch.randn(batch, channels_in, side, side, generator=generator))


def step_time(kind: str, shape, density: float, mode: str, device: str,
              repeats: int = 7) -> float:
    """Median seconds of one training step of a ``kind`` layer of ``shape`` at ``density``
    in ``mode``."""
    generator = torch.Generator().manual_seed(0)
    layer, x = _layer_and_input(kind, shape, generator)
    layer = layer.to(device)
    layer.set_mask((torch.rand(layer.mask.shape, generator=generator) < density).to(device))
    layer.set_mode(mode)
    optimizer = MaskedAdam(layer.parameters(), lr=1e-3, masks=layer)
    x = x.to(device)
    with torch.no_grad():
        target = torch.randn(layer(x).shape, generator=generator).to(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(layer(x), target).backward()
        optimizer.step()

    step()  # warm-up: state allocation, kernel selection
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(device: str) -> dict:
    rows, thresholds = [], {}
    for kind, shapes in SHAPES.items():
        wins = {}
        for shape in shapes:
            for density in DENSITIES:
                dense = step_time(kind, shape, density, "dense", device)
                compact = step_time(kind, shape, density, "compact", device)
                rows.append({"kind": kind, "shape": list(shape), "density": density,
                             "dense_s": dense, "compact_s": compact,
                             "speedup": dense / compact})
                wins.setdefault(density, []).append(compact < dense)
                print(f"{kind:>6} {'x'.join(map(str, shape)):>14}  density {density:5.2f}  "
                      f"dense {1e3 * dense:8.3f} ms  compact {1e3 * compact:8.3f} ms  "
                      f"compact {dense / compact:5.2f}x", flush=True)
        # The highest density at and below which compact wins on every shape of the kind.
        thresholds[kind] = 0.0
        for density in sorted(DENSITIES):
            if not all(wins[density]):
                break
            thresholds[kind] = density
    return {"device": device_name(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "thresholds": thresholds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--output", type=Path, help="directory (default: "
                                                    "benchmarks/results/<device>)")
    args = parser.parse_args()
    result = measure(args.device)
    output = args.output or REPO_ROOT / "benchmarks" / "results" / device_slug(args.device)
    output.mkdir(parents=True, exist_ok=True)
    (output / "threshold.json").write_text(json.dumps(result, indent=2) + "\n")
    for kind, threshold in result["thresholds"].items():
        print(f"{kind}: compact at density <= {threshold} on {result['device']} "
              f"({result['threads']} threads)")
    print(f"wrote {output / 'threshold.json'}")


if __name__ == "__main__":
    main()
