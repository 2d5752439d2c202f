"""Values derived from tensors, kept until one of the tensors changes or is freed.

What a kernel derives from a mask (whether it keeps everything, its bit pattern, which blocks
hold a kept entry) changes once per pruning level but is read at every call: it is computed
once per change. An entry is keyed by the first tensor's identity (plus what else the value
depends on, ``key``) and trusted only while every one of its tensors is the same object (an id
alone can be reused by a new tensor), over the same storage (``p.data = other`` swaps the
storage of the same tensor without moving its version counter: ``.to()``, a masked layer
leaving compact mode) at the same version (any in-place write moves it: ``copy_`` in
``set_mask``, ``load_state_dict``). A write through ``.data`` moves none of these: after one,
clear the cache. An entry is dropped when its first tensor is freed. Tensors without a version
counter (inference tensors, those of a transform such as vmap) are never cached.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Hashable, Sequence

import torch


def versions_of(tensors: Sequence[torch.Tensor]) -> tuple | None:
    """The version counter of each of ``tensors``, or None when one has none."""
    try:
        return tuple(t._version for t in tensors)
    except RuntimeError:  # an inference tensor, or one of a transform (vmap, functionalization)
        return None


class TensorCache:
    """Values computed from tensors, recomputed when one of them changes (see the module)."""

    def __init__(self) -> None:
        # (id of the first tensor, key) -> (weak references to the tensors, to their storages,
        # their versions, the value)
        self._entries: dict = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, tensors: Sequence[torch.Tensor], compute: Callable[[], object], key: Hashable = ()
    ):
        """``compute()``'s value for ``tensors`` (and ``key``), computed at the first call and
        again after any of the tensors changed; computed every time for tensors without a
        version counter."""
        versions = versions_of(tensors)
        if versions is None:
            return compute()
        entry_key = (id(tensors[0]), key)
        entry = self._entries.get(entry_key)
        if (
            entry is not None
            and entry[2] == versions
            and all(
                ref() is tensor and storage() is tensor.untyped_storage()
                for ref, storage, tensor in zip(entry[0], entry[1], tensors)
            )
        ):
            return entry[3]
        value = compute()
        drop = functools.partial(self._drop, entry_key)
        self._entries[entry_key] = (
            tuple(weakref.ref(t, drop) for t in tensors),
            tuple(weakref.ref(t.untyped_storage()) for t in tensors),
            versions,
            value,
        )
        return value

    def clear(self) -> None:
        self._entries.clear()

    def _drop(self, entry_key: tuple, dead: weakref.ref) -> None:
        # Only the entry that holds this reference: the id may already key a newer entry.
        entry = self._entries.get(entry_key)
        if entry is not None and any(ref is dead for ref in entry[0]):
            del self._entries[entry_key]
