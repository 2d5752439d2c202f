"""Reading and writing a name -> tensor mapping: safetensors for ``.safetensors`` paths,
``torch.save`` for any other (``.pt``, ``.pth``).

Writes are atomic: the bytes go to a temporary file beside the target, which replaces the
target only once complete, so an interrupted save leaves either the old file or the new one,
never half of one. Reads happen on the CPU and never unpickle code (``weights_only=True``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from ..files import ORDER_KEY, load_torch_quietly, torch_load_reason, write_atomically

PathLike = str | os.PathLike


def save_tensors(path: PathLike, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write ``tensors`` (copied to the CPU) to ``path`` atomically, in the format its suffix
    names; the directory must exist."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot save to {str(path)!r}: directory {str(path.parent)!r} does not exist"
        )
    cpu = {
        name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in tensors.items()
    }
    if _is_safetensors(path):
        metadata = {ORDER_KEY: json.dumps(list(cpu))}
        write_atomically(
            path, lambda file: file.write(safetensors.torch.save(cpu, metadata=metadata))
        )
    else:
        write_atomically(path, lambda file: torch.save(cpu, file))


def load_tensors(path: PathLike) -> dict[str, torch.Tensor]:
    """The name -> tensor mapping stored at ``path``, on the CPU, in the order it was saved."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {str(path)!r}")
    expected = (
        "a safetensors file" if _is_safetensors(path) else "a torch.save'd dict of name -> tensor"
    )
    try:
        tensors = _read_safetensors(path) if _is_safetensors(path) else _read_torch(path)
    except Exception as error:  # every reader failure means the same thing to the caller
        raise ValueError(
            f"cannot read {str(path)!r}: expected {expected}, but it is not a "
            f"file this tool wrote, or it is damaged ({_reason(error)}); write it "
            f"again with save_tensors or Masks.save"
        ) from None
    if not isinstance(tensors, dict) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor)
        for name, tensor in tensors.items()
    ):
        raise ValueError(
            f"{str(path)!r} holds a {type(tensors).__name__} that is not a dict "
            f"of name -> tensor; expected {expected}"
        )
    return tensors


def _reason(error: Exception) -> str:
    """The gist of a reader's error, in one line (torch.load's advice to load unsafely left
    out)."""
    return torch_load_reason(error)


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    with safetensors.safe_open(str(path), framework="pt", device="cpu") as file:
        stored = list(file.keys())
        order = json.loads((file.metadata() or {}).get(ORDER_KEY, "null"))
        if not isinstance(order, list) or sorted(order) != sorted(stored):
            order = stored  # written by another tool: its own order is all there is
        return {name: file.get_tensor(name) for name in order}


def _read_torch(path: Path):
    return load_torch_quietly(path)
