"""What a command line can name, as ``sparse-tickets list`` shows it: the models, the datasets
(and where each comes from), the presets and the backends on this machine."""

from __future__ import annotations

from .. import data, models, ops
from .presets import DEFAULT_PRESET, PRESETS


def lines() -> list[str]:
    """Every section of the listing, a line each item under its heading."""
    return [*model_lines(), *dataset_lines(), *preset_lines(), *backend_lines()]


def model_lines() -> list[str]:
    listed = ["models:"]
    for name in models.names():
        spec = models.spec(name)
        shape = "x".join(map(str, spec.default_input_shape))
        listed.append(f"  {name:<15} input {shape:<8} {spec.description}")
    return listed


def dataset_lines() -> list[str]:
    listed = ["datasets:"]
    for name in data.names():
        spec = data.spec(name)
        where = (
            f"{spec.description} from --data-dir" if spec.reads_directory else (spec.description)
        )
        listed.append(f"  {name:<15} {where}")
    return listed


def preset_lines() -> list[str]:
    listed = ["presets:"]
    for name, hp in PRESETS.items():
        listed.append(
            f"  {name:<22} {hp.optimizer} lr {hp.lr:g}, batch {hp.batch_size}, "
            f"length {hp.iterations}, {hp.levels} levels, {hp.scope}"
            + (" (default)" if name == DEFAULT_PRESET else "")
        )
    return listed


def backend_lines() -> list[str]:
    """The backends, in the order a call tries them, each with whether it can serve here."""
    return ["backends:", *(f"  {row}" for row in ops.backends())]
