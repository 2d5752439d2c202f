"""``Masks``: the pruning masks of a model, as a validated mapping of layer name -> bool tensor.

Keys are the names of the masked weights in the model's state_dict (``"fc1.weight"``,
``"features.0.weight"``, ``"attn.in_proj_weight"``), in module order, one per Parameter (a tied
weight goes by its first masked holder). A ``Masks`` is a value: pruning builds new ones from
old ones and never touches a model; :meth:`Masks.apply_to` is the one call that changes a model.

Masks of a model on the meta device (built there to be materialised later) hold no values:
they can be taken, moved to meta and applied to a meta model; everything that reads values
(densities, comparisons, saving, a copy to a real device) refuses them in one line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn

from ..compact import choice
from ..nn import MaskedLayer, validate_mask
from ..nn.holders import masked_weight_holders
from ..nn.tied import check_unaliased, mark_shared, masked_parameters
from .density import LayerDensity, format_density_table
from .names import format_names
from .storage import PathLike, load_tensors, save_tensors
from .torch_prune import masks_from_torch_prune, masks_to_torch_prune

Device = str | torch.device


class Masks(Mapping):
    """An insertion-ordered mapping of layer name -> bool mask tensor.

    ``Masks(mapping)`` accepts bool tensors, or tensors holding only 0 and 1 (converted to
    bool); anything else raises a one-line error naming the key. The tensors are not copied.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None) -> None:
        if masks is None:
            masks = {}
        if not isinstance(masks, Mapping):
            raise TypeError(
                f"Masks expects a mapping of layer name -> mask tensor; got {type(masks).__name__}"
            )
        self._masks: dict[str, torch.Tensor] = {}
        for name, mask in masks.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"mask names must be non-empty strings; got {name!r}")
            if not isinstance(mask, torch.Tensor):
                raise TypeError(
                    f"masks[{name!r}] is a {type(mask).__name__}; expected a bool "
                    f"tensor (or one of 0/1 values)"
                )
            # Checked against itself, validate_mask only checks the values (bool, or 0/1).
            self._masks[name] = validate_mask(mask, mask, name=f"masks[{name!r}]")

    @classmethod
    def from_model(cls, model: nn.Module) -> Masks:
        """A snapshot (copies, not views of the live buffers) of the masks of every masked layer
        of ``model``, on the layers' devices."""
        return cls(
            {
                name: layer.mask.detach().clone()
                for name, layer in _named_masked_weights(model).items()
            }
        )

    @classmethod
    def ones_like(cls, model: nn.Module) -> Masks:
        """All-True masks for every masked layer of ``model``: nothing pruned."""
        return cls(
            {
                name: torch.ones_like(layer.mask)
                for name, layer in _named_masked_weights(model).items()
            }
        )

    @classmethod
    def from_torch_prune(cls, model: nn.Module, remove: bool = False) -> Masks:
        """The masks of every tensor of ``model`` pruned with ``torch.nn.utils.prune``, under
        the tensor's name (``"fc1.weight"``). With ``remove=True`` the torch pruning is also
        made permanent (plain Parameters holding ``orig * mask``), ready for::

            masks = Masks.from_torch_prune(model, remove=True)
            sparse_tickets.masked(model)
            masks.apply_to(model)  # when masks name every masked weight of the model
        """
        return cls(masks_from_torch_prune(model, remove))

    def to_torch_prune(self, model: nn.Module) -> None:
        """Prune the plain ``model`` with ``torch.nn.utils.prune.custom_from_mask`` at these
        masks (e.g. after ``sparse_tickets.unmasked(model)``); all names and shapes are checked
        before any module changes."""
        if any(param.device.type != "meta" for param in model.parameters()):
            self.check_materialised(f"pruning {type(model).__name__} with torch")
        masks_to_torch_prune(self, model)

    @classmethod
    def load(cls, path: PathLike, device: Device | None = None) -> Masks:
        """Masks saved by :meth:`save`, on the CPU unless ``device`` is given."""
        tensors = load_tensors(path)
        try:
            masks = cls(tensors)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{str(path)!r} does not hold masks: {error}") from None
        return masks if device is None else masks.to(device)

    def save(self, path: PathLike) -> None:
        """Write the masks to ``path`` atomically: safetensors when it ends in ``.safetensors``,
        ``torch.save`` otherwise. The directory must exist."""
        self.check_materialised("saving masks")
        save_tensors(path, self._masks)

    def check_materialised(self, what: str) -> None:
        """Raise ValueError in one line when a mask is on the meta device, which holds no
        values that ``what`` could read."""
        _check_materialised(self._masks, what)

    def apply_to(self, model: nn.Module) -> None:
        """Set these masks on ``model``'s masked weights, which zeroes the weights they prune.

        All or nothing: the names must match the model's masked weights exactly, every mask
        must fit its weight (shape, 0/1 values) and every layer its execution mode, all checked
        before any layer changes, so a mismatch leaves the model as it was. A weight tied to
        several kernel layers gets the mask in each.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"expected a torch.nn.Module; got {type(model).__name__}")
        mark_shared(model)  # ties made since masked() keep their layers dense
        groups = masked_weight_holders(model)
        if not groups:
            raise ValueError(
                f"{type(model).__name__} has no masked layers; expected a model "
                f"converted with sparse_tickets.masked(model)"
            )
        missing = [name for name in groups if name not in self._masks]
        unexpected = [name for name in self._masks if name not in groups]
        if missing or unexpected:
            raise ValueError(
                f"masks do not match the model's masked layers: missing "
                f"{format_names(missing)}; unexpected {format_names(unexpected)}"
            )
        check_unaliased(masked_parameters(groups))
        checked = {}
        for name, sources in groups.items():
            like = sources[0].mask
            if self._masks[name].shape != like.shape:
                raise ValueError(
                    f"masks[{name!r}] has shape {tuple(self._masks[name].shape)}; "
                    f"expected the layer's weight shape {tuple(like.shape)}"
                )
            if self._masks[name].is_meta and not like.is_meta:
                self.check_materialised(f"applying masks to a model on {like.device}")
            checked[name] = validate_mask(
                self._masks[name].to(like.device), like, name=f"masks[{name!r}]"
            )
            for source in sources:
                if isinstance(source, MaskedLayer):
                    choice.choose(source)  # raises where the layer's own mode cannot be kept
        for name, sources in groups.items():
            for source in sources:
                source.set_mask(checked[name])

    @property
    def num_unpruned(self) -> int:
        """Number of weights the masks keep, over all layers."""
        self.check_materialised("counting the kept weights")
        return sum(int(mask.sum().item()) for mask in self._masks.values())

    @property
    def numel(self) -> int:
        """Number of weights the masks cover, over all layers."""
        return sum(mask.numel() for mask in self._masks.values())

    @property
    def density(self) -> float:
        """Fraction of all weights kept, ``num_unpruned / numel`` (0.0 when there are none)."""
        numel = self.numel
        return self.num_unpruned / numel if numel else 0.0

    @property
    def sparsity(self) -> float:
        """Fraction of all weights pruned, ``1 - density``."""
        return 1.0 - self.density

    def density_rows(self) -> list[LayerDensity]:
        """One :class:`LayerDensity` per layer, in order (``row.as_dict()`` for JSON)."""
        self.check_materialised("a density table")
        return [LayerDensity.of(name, mask) for name, mask in self._masks.items()]

    def density_report(self) -> str:
        """A printable table: name, shape, kept, total and density per layer, then the total."""
        return format_density_table(self.density_rows())

    def is_subset_of(self, other: Mapping[str, torch.Tensor]) -> bool:
        """Whether every weight kept here is kept in ``other`` too (``other`` must name the same
        layers with the same shapes)."""
        other = _comparable(self, other)
        self.check_materialised("comparing masks")
        other.check_materialised("comparing masks")
        return not any(
            bool((mask & ~other[name].to(mask.device)).any()) for name, mask in self._masks.items()
        )

    def to(self, device: Device) -> Masks:
        """The same masks on ``device``."""
        if torch.device(device).type != "meta":
            self.check_materialised(f"copying masks to {device}")
        return Masks({name: mask.to(device) for name, mask in self._masks.items()})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        if set(self._masks) != set(other):
            return False
        self.check_materialised("comparing masks")
        _check_materialised(other, "comparing masks")
        return all(
            isinstance(other[name], torch.Tensor) and torch.equal(mask, other[name].to(mask.device))
            for name, mask in self._masks.items()
        )

    __hash__ = None  # mutable tensors inside: equal now need not mean equal later

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        if any(mask.is_meta for mask in self._masks.values()):
            return f"Masks({len(self)} layers, on the meta device)"
        return f"Masks({len(self)} layers, density={self.density:.4f})"


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight tensors (detached) of ``model``'s masked weights, under the same names as
    :meth:`Masks.from_model`: what the pruning functions score."""
    return {name: layer.weight.detach() for name, layer in _named_masked_weights(model).items()}


def _named_masked_weights(model: nn.Module) -> dict:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module; got {type(model).__name__}")
    layers = {name: sources[0] for name, sources in masked_weight_holders(model).items()}
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no masked layers; expected a model "
            f"converted with sparse_tickets.masked(model)"
        )
    return layers


def _check_materialised(masks: Mapping, what: str) -> None:
    on_meta = [
        name for name, mask in masks.items() if isinstance(mask, torch.Tensor) and mask.is_meta
    ]
    if on_meta:
        raise ValueError(
            f"{what} needs the masks' values, and masks {format_names(on_meta)} "
            f"are on the meta device, which holds none; expected the masks of a "
            f"materialised model (model.to_empty(device=...), then load its "
            f"state_dict)"
        )


def _comparable(masks: Masks, other: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """``other`` as masks over the same layers and shapes as ``masks``, or a one-line error."""
    other = other if isinstance(other, Masks) else Masks(other)
    missing = [name for name in masks if name not in other]
    unexpected = [name for name in other if name not in masks]
    if missing or unexpected:
        raise ValueError(
            f"cannot compare masks over different layers: missing from the other "
            f"{format_names(missing)}; only in the other {format_names(unexpected)}"
        )
    for name, mask in masks.items():
        if other[name].shape != mask.shape:
            raise ValueError(
                f"cannot compare masks[{name!r}]: shape {tuple(mask.shape)} here, "
                f"{tuple(other[name].shape)} in the other"
            )
    return other
