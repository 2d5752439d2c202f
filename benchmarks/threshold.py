"""Measure the density below which a compact layer trains faster than a dense-masked one.

The full measurement behind ``auto``'s short calibration (:mod:`sparse_tickets.compact.
calibration`, whose training step and interleaved timing it runs): one training step (forward,
backward, masked Adam step) of a single masked layer, in dense mode and in compact mode, at every
density from 100% down to 2%, on the linear layers of the paper's LeNet-300-100 and a
4096x4096 layer, and the conv layers of ResNet-20 and Conv-6. For each kind (linear, conv2d)
the threshold is the highest density at and below which compact wins, by the calibration's
margin, on every shape of the kind. ``auto`` does not read this file: it measures the machine
it runs on (see :mod:`sparse_tickets.compact.thresholds`), and ``SPARSE_TICKETS_COMPACT_BELOW``
sets a density by hand.

    python -m benchmarks.threshold [--device cpu|cuda] [--output DIR]

prints the table and writes ``threshold.json`` under ``benchmarks/results/<device>/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.machine import REPO_ROOT, device_name, device_slug
from sparse_tickets.compact import calibration

# linear: (batch, in_features, out_features); conv2d: (batch, in, out, image side), 3x3, pad 1
SHAPES = {
    "linear": [(60, 784, 300), (60, 300, 100), (64, 4096, 4096)],
    "conv2d": [(32, 16, 16, 32), (16, 64, 64, 32), (16, 256, 256, 8)],
}
DENSITIES = [1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.02]
PAIRS = 7


def measure(device: str) -> dict:
    rows, thresholds = [], {}
    for kind, shapes in SHAPES.items():
        kind_rows = []
        for shape in shapes:
            for density in DENSITIES:
                row = calibration.compare(kind, shape, density, device, pairs=PAIRS)
                kind_rows.append(row)
                print(
                    f"{kind:>6} {'x'.join(map(str, shape)):>14}  density {density:5.2f}  "
                    f"dense {1e3 * row['dense_s']:8.3f} ms  "
                    f"compact {1e3 * row['compact_s']:8.3f} ms  "
                    f"compact {row['speedup']:5.2f}x",
                    flush=True,
                )
        thresholds[kind] = calibration.threshold_from(kind_rows)
        rows += kind_rows
    return {
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "margin": calibration.MARGIN,
        "thresholds": thresholds,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--output", type=Path, help="directory (default: benchmarks/results/<device>)"
    )
    args = parser.parse_args()
    result = measure(args.device)
    output = args.output or REPO_ROOT / "benchmarks" / "results" / device_slug(args.device)
    output.mkdir(parents=True, exist_ok=True)
    (output / "threshold.json").write_text(json.dumps(result, indent=2) + "\n")
    for kind, threshold in result["thresholds"].items():
        print(
            f"{kind}: compact at density <= {threshold} on {result['device']} "
            f"({result['threads']} threads)"
        )
    print(f"wrote {output / 'threshold.json'}")


if __name__ == "__main__":
    main()
