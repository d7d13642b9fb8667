"""Binary masks on weights: the effective weight is W ⊙ M.

A mask lives on its module as a buffer ``<param>_mask`` (so it is saved with the state dict and
moves with ``.to()``). Two hooks keep pruned weights at zero through any training loop:

- a gradient hook multiplies ``∂L/∂W`` by M, so optimisers see no gradient for pruned weights;
- a forward pre-hook re-applies ``W ← W ⊙ M`` before every forward, which also undoes anything an
  optimiser does to zero-gradient entries (e.g. momentum accumulated before pruning).

Example:
    >>> layer = nn.Linear(2, 2)
    >>> masks = MaskSet(layer)
    >>> masks.set("weight", torch.tensor([[1., 0.], [0., 1.]]))
    >>> bool((layer.weight[0, 1] == 0).item())
    True
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.errors import ConfigError

__all__ = ["MaskSet"]


def _split(name: str) -> tuple[str, str]:
    module, _, attr = name.rpartition(".")
    return module, attr


class MaskSet:
    """The masks of one model, keyed by parameter name (e.g. ``"0.weight"``)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._handles: dict[str, list] = {}

    # -- reading -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._handles)

    def mask(self, name: str) -> torch.Tensor:
        module_name, attr = _split(name)
        return getattr(self.model.get_submodule(module_name), f"{attr}_mask")

    def masks(self) -> dict[str, torch.Tensor]:
        return {n: self.mask(n) for n in self._handles}

    def sparsity(self) -> dict[str, float]:
        """Per masked tensor: S = 1 − ‖M‖₀ / numel."""
        return {n: 1.0 - float(m.sum()) / m.numel() for n, m in self.masks().items()}

    def global_sparsity(self) -> float:
        ms = list(self.masks().values())
        total = sum(m.numel() for m in ms)
        return 1.0 - sum(float(m.sum()) for m in ms) / total if total else 0.0

    # -- writing -------------------------------------------------------------------------------
    def set(self, name: str, mask: torch.Tensor) -> None:
        """Installs (or replaces) the mask of parameter ``name`` and zeroes the pruned weights."""
        module_name, attr = _split(name)
        module = self.model.get_submodule(module_name)
        param = getattr(module, attr, None)
        if not isinstance(param, nn.Parameter):
            raise ConfigError(f"{name!r} is not a parameter of the model")
        if mask.shape != param.shape:
            raise ConfigError(f"mask for {name!r} has shape {tuple(mask.shape)}, "
                              f"the parameter {tuple(param.shape)}")
        mask = mask.to(device=param.device, dtype=param.dtype)
        if name in self._handles:
            getattr(module, f"{attr}_mask").copy_(mask)
        else:
            if hasattr(module, f"{attr}_mask"):
                raise ConfigError(f"{name!r} already carries a mask from another pruner; call "
                                  "make_permanent() on that pruner first, or keep using it")
            module.register_buffer(f"{attr}_mask", mask.clone())
            buf_name = f"{attr}_mask"
            grad_hook = param.register_hook(lambda g, m=module, b=buf_name: g * getattr(m, b))

            def pre_hook(mod, _args, a=attr, b=buf_name):
                with torch.no_grad():
                    getattr(mod, a).mul_(getattr(mod, b))

            self._handles[name] = [grad_hook, module.register_forward_pre_hook(pre_hook)]
        with torch.no_grad():
            param.mul_(getattr(module, f"{attr}_mask"))

    def apply_(self) -> None:
        """Re-applies every mask to its weight (``W ← W ⊙ M``)."""
        with torch.no_grad():
            for name in self._handles:
                module_name, attr = _split(name)
                module = self.model.get_submodule(module_name)
                getattr(module, attr).mul_(getattr(module, f"{attr}_mask"))

    def make_permanent(self) -> None:
        """Folds the masks into the weights and removes mask buffers and hooks.

        The pruned weights stay exactly zero; the model's state dict is the plain one again.
        """
        self.apply_()
        for name, handles in self._handles.items():
            for h in handles:
                h.remove()
            module_name, attr = _split(name)
            delattr(self.model.get_submodule(module_name), f"{attr}_mask")
        self._handles.clear()
