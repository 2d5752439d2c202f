"""Several processes, one run: torch.distributed as torchrun sets it up.

``torchrun --nproc_per_node N -m sparse_tickets imp ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment. Each process
trains every level on its share of each batch under DistributedDataParallel (gloo on the CPU,
nccl on GPUs, ``cuda:LOCAL_RANK`` each). Rank 0 is the only process that touches the run
directory: it decides what is left to do, prunes, reads and writes every file, and sends the
other ranks what they need (masks, starting weights, a checkpoint) through the process group,
so the machines of a job need not share a file system.

Without torchrun (``WORLD_SIZE`` unset or 1) no process group is made and every helper here is
the identity: a single-process run computes exactly what it did before this module existed.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..nn import MaskedLayer
from .hparams import Hparams, HparamsError

T = TypeVar("T")


class DistributedError(RuntimeError):
    """The processes of a job disagree, or torchrun's environment cannot be used."""


class MainRankFailed(DistributedError):
    """Rank 0 raised while the other ranks waited for its result; rank 0 reports the error."""


# --- torchrun's environment (read without a process group) ----------------------------------


def _environment_integer(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise DistributedError(
            f"{name}={text!r} in the environment; expected an integer (as torchrun sets it)"
        ) from None


def launched_world_size() -> int:
    """How many processes torchrun started for this job (``WORLD_SIZE``; 1 without torchrun)."""
    return max(_environment_integer("WORLD_SIZE", 1), 1)


def launched_rank() -> int:
    """This process's rank as torchrun set it (``RANK``; 0 without torchrun)."""
    return _environment_integer("RANK", 0)


def global_batch(hp: Hparams, scale: bool) -> Hparams:
    """The hyperparameters a torchrun job of N processes trains with: the same global
    batch (each process a 1/N slice of it), or with ``scale`` a global batch N times larger and
    the learning rate N times larger (the linear scaling rule of Goyal et al., 2017). The
    scaled values are the run's hyperparameters: its directory is that of a single process
    given ``--batch-size`` and ``--lr`` of those values."""
    processes = launched_world_size()
    if scale:
        return hp.replace(batch_size=hp.batch_size * processes, lr=hp.lr * processes)
    if hp.batch_size % processes:
        raise HparamsError(
            f"batch_size {hp.batch_size} does not divide by the {processes} "
            f"processes of this job; expected a multiple of {processes}, or "
            f"--scale-batch ({hp.batch_size} per process)"
        )
    return hp


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``): the GPU it uses."""
    return _environment_integer("LOCAL_RANK", 0)


def backend_for(device: torch.device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the duration of the block (gloo for a CPU device,
    nccl for CUDA, whose device must be ``cuda:LOCAL_RANK``); nothing when ``WORLD_SIZE`` is
    unset or 1, or when a group exists already (a caller that made its own keeps it)."""
    if launched_world_size() == 1 or dist.is_initialized():
        yield
        return
    device = torch.device(device)
    options = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        options["device_id"] = device  # binds the communicator now, not at the first call
    dist.init_process_group(backend_for(device), **options)
    try:
        yield
        dist.barrier()  # leave together
    finally:
        # Free whatever still holds the group while Python is fully alive: a gloo group
        # destroyed during interpreter shutdown aborts the process ("terminate called without
        # an active exception": a worker thread drops a Python reference after the GIL is
        # gone). Seen in about 1 exit in 15 with torch 2.13, never in 60 since.
        gc.collect()
        dist.destroy_process_group()


# --- who am I -------------------------------------------------------------------------------


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the process that reads and writes files and shows progress."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def _collective_device() -> torch.device:
    """Where tensors of a collective must live: the current GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --- rank 0 computes, everyone receives -----------------------------------------------------


class _Failure:
    """What rank 0 sends in place of a result when computing it raised."""

    def __init__(self, description: str):
        self.description = description


def _broadcast_object(value: Any) -> Any:
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` run on rank 0 only, its result on every rank. The result travels pickled,
    so tensors in it must be on the CPU. When ``compute`` raises on rank 0 it raises there, and
    every other rank raises :class:`MainRankFailed` instead of waiting forever. Single process:
    just ``compute()``."""
    if not active():
        return compute()
    if is_main():
        try:
            result = compute()
        except BaseException as error:
            _broadcast_object(_Failure(f"{type(error).__name__}: {error}".splitlines()[0]))
            raise
        _broadcast_object(result)
        return result
    received = _broadcast_object(None)
    if isinstance(received, _Failure):
        raise MainRankFailed(f"rank 0 failed ({received.description}); rank {rank()} stops too")
    return received


def gather_to_main(value: T) -> list[T] | None:
    """Every rank's ``value`` (picklable, CPU tensors) as a list on rank 0, None elsewhere."""
    if not active():
        return [value]
    gathered = [None] * world_size() if is_main() else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


# --- masks: pruned on rank 0, broadcast, verified by checksum -------------------------------


def checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the names, dtypes, shapes and bytes of ``tensors``, in their order."""
    digest = hashlib.sha256()
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(
            tensor.view(torch.uint8).numpy().tobytes()
            if tensor.dtype == torch.bool
            else tensor.numpy().tobytes()
        )
    return digest.hexdigest()


def verify_identical(tensors: Mapping[str, torch.Tensor], what: str = "masks") -> str:
    """The checksum of ``tensors``, after checking every rank holds the same: a mismatch raises
    a one-line :class:`DistributedError` on every rank."""
    mine = checksum(tensors)
    if not active():
        return mine
    digests = [None] * world_size()
    dist.all_gather_object(digests, mine)
    different = [r for r, digest in enumerate(digests) if digest != digests[0]]
    if different:
        other = different[0]
        raise DistributedError(
            f"{what} differ across ranks: rank {other} has sha256 "
            f"{digests[other][:16]}, rank 0 has {digests[0][:16]}; expected "
            f"identical {what} on every rank"
        )
    return mine


def share_masks(compute: Callable[[], Mapping[str, torch.Tensor]]) -> Mapping[str, torch.Tensor]:
    """The masks ``compute()`` returns on rank 0, on every rank, checked by checksum. The
    caller's mapping type is kept on rank 0; other ranks receive a plain dict of CPU tensors
    in the same order. Single process: just ``compute()``."""
    if not active():
        return compute()
    masks = from_main(lambda: {name: mask.detach().to("cpu") for name, mask in compute().items()})
    verify_identical(masks, "masks")
    return masks


def share_state(compute: Callable[[], Mapping[str, torch.Tensor] | None]):
    """A state_dict (or None) computed on rank 0, on every rank, as CPU tensors."""
    if not active():
        return compute()

    def on_cpu():
        state = compute()
        return (
            None
            if state is None
            else {name: value.detach().to("cpu") for name, value in state.items()}
        )

    return from_main(on_cpu)


# --- training: batches, gradients, evaluation sums ------------------------------------------


def check_batch(batch_size: int) -> None:
    """Each rank trains on an equal slice of the global batch: ``batch_size`` must divide by the
    number of processes."""
    processes = world_size()
    if batch_size % processes:
        raise ValueError(
            f"batch_size is {batch_size}, which does not divide by the "
            f"{processes} processes of this job; expected a multiple of "
            f"{processes} (or --scale-batch: {batch_size} per process)"
        )


def my_slice(indices: torch.Tensor) -> torch.Tensor:
    """This rank's examples of a global batch: every ``world_size``-th from its rank on, as
    DistributedSampler deals an epoch; the union over ranks is the whole batch."""
    return indices[rank() :: world_size()] if active() else indices


def my_share(count: int) -> range:
    """This rank's items of ``count`` (items rank, rank + world_size, ...)."""
    return range(rank(), count, world_size()) if active() else range(count)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks (``tensor`` itself in a single process)."""
    if not active():
        return tensor
    device = _collective_device()
    total = tensor.to(device, copy=True)
    dist.all_reduce(total)
    return total.to(tensor.device)


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the ranks (``tensor`` itself in a single process)."""
    if not active():
        return tensor
    return all_reduce_sum(tensor) / world_size()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` under DistributedDataParallel (the model itself in a single process).

    Call it after the level's masks are set: a masked layer may switch to compact mode at
    ``set_mask`` and train its ``values`` instead of ``weight``, and DDP must see the Parameters
    the level trains. On CUDA, BatchNorm layers become SyncBatchNorm first, so batch statistics
    are those of the global batch as in a single process (torch has no CPU SyncBatchNorm: on
    the CPU each rank normalises by its own slice). DDP does not broadcast buffers at every
    forward (the masks alone would cost their size per step);
    :func:`sync_buffers` does it before evaluations and checkpoints.
    """
    if not active():
        return model
    _check_modes(model)
    device = torch.device(device)
    if device.type == "cuda":
        _use_sync_batch_norm(model)
    # torch 2.13 renamed broadcast_buffers to forward_sync_buffers.
    no_forward_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers"
        in inspect.signature(nn.parallel.DistributedDataParallel).parameters
        else {"broadcast_buffers": False}
    )
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None, **no_forward_sync
    )


def _check_modes(model: nn.Module) -> None:
    """Every rank must train the same Parameters: ``auto`` picks compact only where a compiled
    backend serves, which one machine of a job may lack."""
    mine = {
        name: module.mode
        for name, module in model.named_modules()
        if isinstance(module, MaskedLayer)
    }
    everyone = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    for other, theirs in enumerate(everyone):
        for name, mode in mine.items():
            if theirs.get(name) != mode:
                raise DistributedError(
                    f"masked layer {name or 'model'} runs {theirs.get(name)} on rank {other} but "
                    f"{mode} on rank {rank()}; expected one mode on every rank (under --mode "
                    f"auto a machine without the compiled kernels runs dense: pass --mode "
                    f"dense or --mode compact)"
                )


def _use_sync_batch_norm(model: nn.Module) -> None:
    batch_norms = nn.modules.batchnorm._BatchNorm
    if any(
        isinstance(m, batch_norms) and not isinstance(m, nn.SyncBatchNorm) for m in model.modules()
    ):
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:
            raise DistributedError(
                f"cannot convert a {type(model).__name__} that is itself a "
                f"BatchNorm; expected a model containing its BatchNorm layers"
            )


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. The masks and compact
    indices of masked layers are left out: they are identical already (checked by checksum)."""
    if not active():
        return
    for module in model.modules():
        if isinstance(module, MaskedLayer):
            continue
        for buffer in module.buffers(recurse=False):
            if buffer.device.type == "cpu" and dist.get_backend() == "nccl":
                received = buffer.to(_collective_device())
                dist.broadcast(received, src=0)
                buffer.copy_(received)
            else:
                dist.broadcast(buffer, src=0)
