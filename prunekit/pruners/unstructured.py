"""Mask-based pruning of Linear and Conv layers at any granularity (element, vector, kernel, filter, N:M).

The pruner behind ``prunekit.prune_(model, UnstructuredConfig(...))``, kept for schedules that move
the masks step by step (iterative, gradual, lottery).

Example:
    >>> pruner = UnstructuredPruner(model, UnstructuredConfig(sparsity=0.9, importance="l1", allocation="global"))
    >>> pruner.prune_to()             # 90% of the prunable weights become zero
    >>> pruner.make_permanent()       # masks folded in, plain state dict again
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.importance import WeightInputs, get
from prunekit.masks import MaskSet
from prunekit.pruners.allocations import ALLOCATIONS
from prunekit.pruners.configs import UnstructuredConfig
from prunekit.pruners.granularity import GRANULARITIES, check_nm, nm_mask, nm_sparsity
from prunekit.training import distributed

__all__ = ["UnstructuredPruner", "PRUNABLE_TYPES", "check_sparsity"]

#: Layer types whose weights unstructured pruning targets.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
)


def check_sparsity(value: float, what: str = "sparsity") -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{what} must be in [0, 1), got {value!r}")
    return float(value)


class UnstructuredPruner:
    """Holds the masks of one model and moves them towards a sparsity target.

    Args:
        model: the model; masks are installed on it.
        config: what to prune and how (its ``sparsity`` is the default target of :meth:`prune_to`).
        calibration: an ``(x, y)`` batch for the criteria that need data (``snip`` and ``taylor`` use the
            loss on it, ``apoz`` the activations, ``synflow`` and ``bn_folded`` only its input shape); may
            also be set later as ``pruner.calibration``.
    """

    def __init__(self, model: nn.Module, config: UnstructuredConfig | None = None,
                 calibration: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.model = model
        self.config = config or UnstructuredConfig()
        self.criterion = get(self.config.importance, "weight")
        self.granularity = GRANULARITIES.get(self.config.granularity)
        self.calibration = calibration
        self.masks = MaskSet(model)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.names = self._select()
        if not self.names:
            raise ConfigError("no prunable layer left: every Linear/Conv layer is excluded")
        if self.granularity.fixed_pattern:
            for n, p in self.parameters().items():
                check_nm(n, p.shape, self.config.nm)

    def _select(self) -> list[str]:
        """Names of the parameters to prune, in model order."""
        out = []
        patterns = self.config.exclude
        for mname, module in self.model.named_modules():
            if not isinstance(module, PRUNABLE_TYPES):
                continue
            for attr in ("weight", "bias") if self.config.include_bias else ("weight",):
                p = getattr(module, attr, None)
                pname = f"{mname}.{attr}" if mname else attr
                if p is None or any(fnmatch.fnmatchcase(x, pat) for x in (mname, pname)
                                    for pat in patterns):
                    continue
                out.append(pname)
        unmatched = [p for p in patterns
                     if not any(fnmatch.fnmatchcase(n, p) for n, _ in self.model.named_modules())
                     and not any(fnmatch.fnmatchcase(n, p) for n, _ in self.model.named_parameters())]
        if unmatched:
            raise ConfigError(f"exclude pattern(s) {unmatched} match no layer of the model")
        return out

    def parameters(self) -> dict[str, nn.Parameter]:
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in self.names}

    def current_masks(self) -> dict[str, torch.Tensor]:
        have = self.masks.masks()
        return {n: have[n] if n in have else torch.ones_like(p, dtype=torch.float32)
                for n, p in self.parameters().items()}

    def _check_calibration(self) -> None:
        needs = self.criterion.needs
        if self.calibration is None and needs & {"data", "example_inputs"}:
            raise ConfigError(f"criterion {self.criterion.name!r} needs a calibration batch (it scores with "
                              f"{', '.join(sorted(needs - {'weights', 'at_init'}))}): pass calibration=(x, y) to "
                              "UnstructuredPruner")
        if "labels" in needs and self.calibration[1] is None:
            raise ConfigError(f"criterion {self.criterion.name!r} needs labels: pass calibration=(x, y) with y")

    def scores(self) -> dict[str, torch.Tensor]:
        """Every pruned parameter's single-weight scores (the criterion's weight form)."""
        self._check_calibration()
        inputs = WeightInputs(self.model, list(self.names), self.calibration, self.generator, self.config.seed)
        return {n: s.detach().float().cpu() for n, s in self.criterion.weight(inputs).items()}

    def prune_to(self, target: float | None = None, step_fn: Callable[[float], float] | None = None) -> float:
        """Prunes until the allocation's target is met; returns the resulting sparsity of the pruned set.

        Args:
            target: final sparsity in [0, 1) (ignored by allocations ``ratios`` and ``threshold``); default
                the config's ``sparsity`` (1 − N/M for granularity ``nm``).
            step_fn: maps a final sparsity to this step's (schedules use it); default identity.
        """
        target = self._target(target)
        if self.config.allocation not in ("ratios", "threshold"):
            check_sparsity(target)
        current = {n: m.float().cpu() for n, m in self.current_masks().items()}
        scores = self.scores()
        g = self.granularity
        if g.fixed_pattern:  # N:M: the pattern, not an allocation, sets the mask
            masked = {n: torch.where(current[n] > 0, s, torch.full_like(s, -torch.inf))
                      for n, s in scores.items()}
            new = {n: nm_mask(s, self.config.nm) * current[n] for n, s in masked.items()}
        else:
            allocation = ALLOCATIONS.get(self.config.allocation)
            group_new = allocation({n: g.group_scores(s) for n, s in scores.items()},
                              {n: g.group_mask(m) for n, m in current.items()},
                              target, step_fn or (lambda s: s),
                              ratios=self.config.ratios, threshold=self.config.threshold)
            new = {n: g.expand(m, current[n].shape) * current[n] for n, m in group_new.items()}
        new = distributed.agree_masks(new)  # under torchrun: rank 0's masks on every rank
        for n, m in new.items():
            self.masks.set(n, m)
        if g.name == "filter":
            self._mask_filter_biases(new)
        return self.sparsity()

    def _target(self, target: float | None) -> float:
        if target is not None:
            return target
        if self.config.sparsity is not None:
            return self.config.sparsity
        if self.granularity.fixed_pattern:
            return nm_sparsity(self.config.nm)
        if self.config.allocation in ("ratios", "threshold"):
            return 0.0
        raise ConfigError(f"UnstructuredConfig(allocation={self.config.allocation!r}) needs sparsity= (the fraction "
                          f"removed, e.g. sparsity=0.9), or pass the target to prune_to()")

    def _mask_filter_biases(self, masks: dict[str, torch.Tensor]) -> None:
        """A pruned filter takes its bias with it, so its output channel is exactly zero."""
        for n, m in masks.items():
            module_name, _, attr = n.rpartition(".")
            module = self.model.get_submodule(module_name)
            if attr == "weight" and getattr(module, "bias", None) is not None and \
                    f"{module_name}.bias" not in masks:
                alive = m.reshape(m.shape[0], -1).amax(1)
                self.masks.set(f"{module_name}.bias" if module_name else "bias", alive)

    def sparsity(self) -> float:
        """Sparsity over the prunable set: S = 1 − Σ‖M‖₀ / Σ numel."""
        masks = self.current_masks()
        total = sum(m.numel() for m in masks.values())
        return 1.0 - sum(float(m.sum()) for m in masks.values()) / total

    def layer_sparsity(self) -> dict[str, float]:
        return {n: 1.0 - float(m.sum()) / m.numel() for n, m in self.current_masks().items()}

    def make_permanent(self) -> None:
        self.masks.make_permanent()
