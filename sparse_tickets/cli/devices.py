"""``--device``: the torch device a command trains on."""

from __future__ import annotations

import torch

from ..lottery import distributed
from .common import PROG, UsageError

_DEVICES = "cpu, cuda or cuda:N"


def device(name: str | None) -> torch.device:
    """The device of ``--device``; under torchrun, a GPU is ``cuda:LOCAL_RANK``."""
    chosen = named_device(name)
    if chosen.type != "cuda" or distributed.launched_world_size() == 1:
        return chosen
    local = distributed.local_rank()
    if chosen.index is not None and chosen.index != local:
        raise UsageError(
            f"{PROG}: --device {name} under torchrun, but each process uses the "
            f"GPU of its LOCAL_RANK (here cuda:{local}); expected --device cuda"
        )
    if local >= torch.cuda.device_count():
        raise UsageError(
            f"{PROG}: LOCAL_RANK is {local}, but torch sees "
            f"{torch.cuda.device_count()} GPU(s); expected --nproc-per-node at "
            f"most the number of GPUs"
        )
    return torch.device("cuda", local)


def named_device(name: str | None) -> torch.device:
    """The device ``name`` names (None: cuda when there is one, else the CPU), if this machine
    has it."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise UsageError(f"{PROG}: unknown device {name!r}; expected {_DEVICES}") from None
    if chosen.type == "meta":
        raise UsageError(
            f"{PROG}: device {name} holds no data, so nothing can train on it; expected {_DEVICES}"
        )
    if chosen.type not in ("cpu", "cuda"):
        raise UsageError(f"{PROG}: device {name} is not supported; expected {_DEVICES}")
    if chosen.type == "cpu":
        # torch accepts any CPU index and ignores it: one CPU device, index 0.
        if chosen.index not in (None, 0):
            raise UsageError(
                f"{PROG}: device {name}: torch has one CPU device, cpu:0; expected {_DEVICES}"
            )
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(f"{PROG}: device {name} asked for, but torch sees no CUDA GPU")
    if (chosen.index or 0) >= torch.cuda.device_count():
        raise UsageError(
            f"{PROG}: device {name} asked for, but torch sees {torch.cuda.device_count()} GPU(s)"
        )
    return chosen
