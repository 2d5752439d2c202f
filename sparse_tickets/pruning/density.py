"""Per-layer density figures of a set of masks: rows for reports and JSON, and a printable table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerDensity:
    """How much of one layer a mask keeps."""

    name: str
    shape: tuple[int, ...]
    kept: int
    total: int

    @classmethod
    def of(cls, name: str, mask: torch.Tensor) -> LayerDensity:
        """The figures of ``mask`` (a bool tensor) under ``name``."""
        return cls(name, tuple(mask.shape), int(mask.sum().item()), mask.numel())

    @property
    def density(self) -> float:
        """``kept / total``; 0.0 for a layer with no weights at all."""
        return self.kept / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        """The row as plain JSON-ready values, density included."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "kept": self.kept,
            "total": self.total,
            "density": self.density,
        }


def format_density_table(rows: Sequence[LayerDensity]) -> str:
    """A fixed-width table, one line per layer (name, shape, kept, total, density %) and a
    ``total`` line over all of them."""
    kept = sum(row.kept for row in rows)
    total = sum(row.total for row in rows)
    lines = [("layer", "shape", "kept", "total", "density")]
    lines += [
        (row.name, str(row.shape), str(row.kept), str(row.total), f"{row.density:.2%}")
        for row in rows
    ]
    lines.append(("total", "", str(kept), str(total), f"{kept / total if total else 0.0:.2%}"))
    widths = [max(len(line[column]) for line in lines) for column in range(5)]
    return "\n".join(
        f"{name:<{widths[0]}}  {shape:<{widths[1]}}  {kept:>{widths[2]}}  "
        f"{total:>{widths[3]}}  {density:>{widths[4]}}"
        for name, shape, kept, total, density in lines
    )
