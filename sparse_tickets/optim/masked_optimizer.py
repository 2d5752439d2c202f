"""What MaskedSGD and MaskedAdam share: the masks, hyperparameter checks, and gathering a
param group's tensors for one multi-tensor step."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch

from .param_masks import MaskSource, resolve_masks


class MaskedOptimizer(torch.optim.Optimizer, metaclass=ABCMeta):
    """A ``torch.optim.Optimizer`` whose step keeps pruned weights and their state at zero.

    Subclasses implement ``_step_params`` and ``check_hyperparameters(group)``; the latter runs
    on the defaults and on every param group as it is added, so a bad value fails where it was
    given.

    Masks are enforced at each step: when a mask shrinks, the state of the newly pruned entries
    (momentum, moments) becomes zero at the next step, not at ``set_mask``. Pruning between
    levels usually builds a fresh optimizer anyway (the paper resets it with the weights).
    """

    def __init__(self, params, defaults: dict, masks: MaskSource = None) -> None:
        self.check_hyperparameters(defaults)
        super().__init__(params, defaults)
        self._masks = resolve_masks(masks, self.param_groups)

    @staticmethod
    @abstractmethod
    def check_hyperparameters(group: dict) -> None:
        """Raise one line naming the first invalid hyperparameter of ``group``."""

    def add_param_group(self, param_group: dict) -> None:
        """Add a param group (as ``torch.optim.Optimizer``) after checking its hyperparameters.

        A mapping of masks is fixed when the optimizer is built, so parameters added here are
        masked only when ``masks`` was the model and they are weights of its masked layers.
        """
        if isinstance(param_group, dict):  # anything else: torch's own error
            self.check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def __getstate__(self) -> dict:
        # torch.optim keeps only defaults, state and param_groups; pickling and deepcopy must
        # carry the masks too, or the copy would step without them.
        return {**super().__getstate__(), "_masks": self._masks}

    @torch.no_grad()
    def step(self, closure=None):
        """Take one step; ``closure``, if given, re-evaluates the model and returns the loss,
        which the step returns."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._follow_mode_switches()
        for group in self.param_groups:
            for params in self._params_with_grad(group):
                self._step_params(group, params)
        return loss

    def _follow_mode_switches(self) -> None:
        """Put each switched layer's new trainable Parameter in its old one's place, with its
        state converted (a dense state tensor gathered at the kept entries, a compact one
        scattered through the index it was built for), so a mode switch changes no number."""
        for old, layer in self._masks.switched():
            new = layer.trainable_weight
            state = self.state.pop(old, None)
            if state:
                self.state[new] = {
                    key: convert_state(value, old, layer, key, self._describe(old))
                    for key, value in state.items()
                }
            for group in self.param_groups:
                group["params"] = [new if param is old else param for param in group["params"]]
            self._masks.rebind(old, new)

    @abstractmethod
    def _step_params(self, group: dict, params: list[torch.Tensor]) -> None:
        """One multi-tensor step of ``params`` (one device's parameters of ``group`` that have
        gradients), through the backend ``ops.select`` picks for them."""

    def _params_with_grad(self, group: dict) -> list[list[torch.Tensor]]:
        """The group's parameters that have a gradient, in group order, split by device.

        One list per device because a backend runs one multi-tensor step on one device; the
        split keeps a model spread over several devices trainable by one optimizer.
        """
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise ValueError(
                    f"{self._describe(param)} has a sparse gradient; "
                    f"{type(self).__name__} needs dense gradients"
                )
            by_device.setdefault(param.device, []).append(param)
        return list(by_device.values())

    def _mask_of(self, param: torch.Tensor) -> torch.Tensor | None:
        """``param``'s current bool mask, or None when it is not masked."""
        return self._masks.mask_of(param, self._describe)

    def _describe(self, param: torch.Tensor) -> str:
        """How an error names ``param``: its name in the model, else its place in the groups."""
        name = self._masks.name_of(param)
        if name is not None:
            return name
        for g, group in enumerate(self.param_groups):
            for k, candidate in enumerate(group["params"]):
                if candidate is param:
                    return f"param_groups[{g}]['params'][{k}]"
        return f"a parameter of shape {tuple(param.shape)}"


def convert_state(value, old: torch.Tensor, layer, key: str, name: str):
    """``value`` (state of ``old``) for ``layer``'s current trainable weight."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return value  # step counters, None buffers
    if value.shape == layer.mask.shape:  # a dense-mode state tensor
        dense = value
    else:
        retired = layer.__dict__.get("_retired_compact")
        if retired is None or retired[0] is not old:
            raise RuntimeError(
                f"state {key!r} of {name} belongs to a compact layout the layer "
                f"has since left twice; step the optimizer between mode "
                f"switches, or build a new optimizer"
            )
        dense = retired[1].to_dense(value)
    return dense if layer.mode == "dense" else layer.compact_index.gather(dense)
