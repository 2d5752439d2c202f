"""Measure the density below which a compact layer trains faster than a dense-masked one.

One training step (forward, backward, MaskedAdam step) of a single masked linear layer, in
dense mode and in compact mode, at falling densities, on the layer shapes of the paper's
LeNet-300-100 and a 4096x4096 layer. The threshold is the highest density at which compact
wins on every shape; ``sparse_tickets.compact.choice.COMPACT_BELOW`` holds the value measured
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
from sparse_tickets import MaskedLinear
from sparse_tickets.optim import MaskedAdam

# (batch, in_features, out_features)
SHAPES = [(60, 784, 300), (60, 300, 100), (64, 4096, 4096)]
DENSITIES = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]


def step_time(shape, density: float, mode: str, device: str, repeats: int = 7) -> float:
    """Median seconds of one training step of a layer of ``shape`` at ``density`` in ``mode``."""
    batch, fan_in, fan_out = shape
    generator = torch.Generator().manual_seed(0)
    layer = MaskedLinear(fan_in, fan_out).to(device)
    layer.set_mask((torch.rand(fan_out, fan_in, generator=generator) < density).to(device))
    layer.set_mode(mode)
    optimizer = MaskedAdam(layer.parameters(), lr=1e-3, masks=layer)
    x = torch.randn(batch, fan_in, generator=generator).to(device)
    target = torch.randn(batch, fan_out, generator=generator).to(device)

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
    rows, wins = [], {}
    for shape in SHAPES:
        for density in DENSITIES:
            dense = step_time(shape, density, "dense", device)
            compact = step_time(shape, density, "compact", device)
            rows.append({"shape": list(shape), "density": density, "dense_s": dense,
                         "compact_s": compact, "speedup": dense / compact})
            wins.setdefault(density, []).append(compact < dense)
            print(f"{'x'.join(map(str, shape)):>14}  density {density:5.2f}  dense "
                  f"{1e3 * dense:8.3f} ms  compact {1e3 * compact:8.3f} ms  "
                  f"compact {dense / compact:5.2f}x", flush=True)
    winning = [density for density, won in wins.items() if all(won)]
    # The highest density below which compact wins everywhere (every lower density wins too).
    threshold = 0.0
    for density in sorted(DENSITIES):
        if density not in winning:
            break
        threshold = density
    return {"device": device_name(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "threshold": threshold, "rows": rows}


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
    print(f"threshold: compact at density <= {result['threshold']} on {result['device']} "
          f"({result['threads']} threads); wrote {output / 'threshold.json'}")


if __name__ == "__main__":
    main()
