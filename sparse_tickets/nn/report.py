"""``masking_report(model)``: which weights of a model carry masks, which do not, and why."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils import prune as torch_prune

from . import weight_mask
from .holders import masked_weight_holders
from .layers import MaskedLayer
from .registry import maskable_weights


@dataclass(frozen=True)
class MaskedRow:
    """One masked weight: its key, the layer type holding it, how it is masked, its size."""

    key: str
    layer_type: str
    kind: str  # "kernel" (MaskedLinear / MaskedConv2d) or "maskable" (mask buffer)
    mode: str  # "dense" or "compact"
    numel: int
    density: float | None  # None on the meta device, which holds no values
    shared_with: tuple  # other names of the same Parameter (tied weights)


@dataclass(frozen=True)
class LeftRow:
    """One weight Parameter (2-D or more) without a mask, and why."""

    name: str
    layer_type: str
    numel: int
    reason: str


@dataclass(frozen=True)
class MaskingReport:
    masked: tuple  # MaskedRow, in module order
    left: tuple  # LeftRow, in module order
    small_params: int  # 0-D and 1-D Parameters (biases, norms): never masked
    small_numel: int

    @property
    def masked_numel(self) -> int:
        return sum(row.numel for row in self.masked)

    @property
    def coverage(self) -> float:
        """Fraction of the entries of all 2-D-or-more weights that carry a mask."""
        total = self.masked_numel + sum(row.numel for row in self.left)
        return self.masked_numel / total if total else 0.0

    def unregistered_types(self, keep=lambda row: True) -> list[str]:
        """``"Type (param, param)"`` for each unregistered (or torch-pruned) layer type holding
        a left weight (of the rows ``keep`` accepts)."""
        found: dict[str, list[str]] = {}
        for row in self.left:
            if row.reason.startswith(("unregistered", "pruned with torch")) and keep(row):
                found.setdefault(row.layer_type, []).append(row.name.rpartition(".")[2])
        return [
            f"{layer_type} ({', '.join(dict.fromkeys(names))})"
            for layer_type, names in found.items()
        ]

    def __str__(self) -> str:
        lines = [
            f"masked {len(self.masked)} weights, {self.masked_numel} entries "
            f"({self.coverage:.1%} of the entries of 2-D+ weights); left {len(self.left)}; "
            f"{self.small_params} biases/norms ({self.small_numel} entries) never masked"
        ]
        for row in self.masked:
            tied = f", tied to {', '.join(row.shared_with)}" if row.shared_with else ""
            density = "n/a (meta)" if row.density is None else f"{row.density:.4f}"
            lines.append(
                f"  masked {row.key:<40} {row.layer_type:<20} {row.kind}/{row.mode} "
                f"{row.numel:>10} density {density}{tied}"
            )
        for row in self.left:
            lines.append(
                f"  left   {row.name:<40} {row.layer_type:<20} {row.numel:>10} {row.reason}"
            )
        return "\n".join(lines)


def masking_report(model: nn.Module) -> MaskingReport:
    """What :func:`~sparse_tickets.nn.masked` made of ``model`` (see :class:`MaskingReport`)."""
    holders = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        holders.setdefault(id(param), []).append(name)
    masked, masked_ids = [], set()
    for key, sources in masked_weight_holders(model).items():
        source = sources[0]
        layer = source if isinstance(source, MaskedLayer) else source.module
        weight = source.trainable_weight
        masked_ids.add(id(weight))
        mask = source.mask
        others = tuple(name for name in holders.get(id(weight), ()) if name != key)
        masked.append(
            MaskedRow(
                key,
                type(layer).__name__,
                "kernel" if isinstance(source, MaskedLayer) else "maskable",
                source.mode,
                mask.numel(),
                None if mask.is_meta else source.density,
                others,
            )
        )
    left, small_params, small_numel = [], 0, 0
    for module_name, module in model.named_modules():
        for attribute, param in module._parameters.items():
            if param is None or id(param) in masked_ids:
                continue
            if param.dim() < 2:
                small_params += 1
                small_numel += param.numel()
                continue
            masked_ids.add(id(param))  # a tie of two unmasked holders is one row
            name = f"{module_name}.{attribute}" if module_name else attribute
            left.append(
                LeftRow(name, type(module).__name__, param.numel(), _reason(module, attribute))
            )
    return MaskingReport(tuple(masked), tuple(left), small_params, small_numel)


def _reason(module: nn.Module, attribute: str) -> str:
    registered: tuple | None = maskable_weights(module)
    if any(
        isinstance(hook, torch_prune.BasePruningMethod)
        for hook in module._forward_pre_hooks.values()
    ):
        return (
            "pruned with torch.nn.utils.prune: import it with "
            "Masks.from_torch_prune(model, remove=True), then masked(model)"
        )
    if isinstance(module, MaskedLayer):
        return "the compact values of a kernel layer"
    if registered is None:
        return (
            f"unregistered layer type {type(module).__name__}: "
            f"register_maskable({type(module).__name__}, weights=({attribute!r},))"
        )
    if attribute not in registered:
        return f"not a registered weight of {type(module).__name__} ({', '.join(registered)})"
    if attribute in weight_mask.masked_weight_names(module):
        return "masked"  # not reached: masked weights are listed above
    return "excluded (or the model was converted before the type was registered)"
