"""Unstructured (weight-level) pruning of Linear and Conv layers with masks.

Example:
    >>> pruner = UnstructuredPruner(model, UnstructuredConfig(criterion="l1", scope="global"))
    >>> pruner.prune_to(0.9)          # 90% of the prunable weights become zero
    >>> pruner.make_permanent()       # masks folded in, plain state dict again
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from prunekit.criteria import WEIGHT_CRITERIA, ScoreContext
from prunekit.errors import ConfigError
from prunekit.masks import MaskSet
from prunekit.pruners.scopes import SCOPES

__all__ = ["UnstructuredConfig", "UnstructuredPruner", "PRUNABLE_TYPES"]

#: Layer types whose weights unstructured pruning targets.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
)


@dataclass(frozen=True)
class UnstructuredConfig:
    """What to prune and how.

    Attributes:
        criterion: name in ``WEIGHT_CRITERIA`` (``l1``, ``l2``, ``random``).
        scope: name in ``SCOPES`` (``layer``, ``global``, ``ratios``, ``threshold``).
        ratios: for scope ``ratios``: parameter-name pattern → sparsity.
        threshold: for scope ``threshold``: weights scoring below it are pruned.
        exclude: parameter-name or module-name patterns (fnmatch) left dense, e.g. ``["fc.*"]``.
        include_bias: also prune biases (scored like weights); by default biases stay dense.
        seed: seeds the ``random`` criterion.
    """

    criterion: str = "l1"
    scope: str = "global"
    ratios: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None
    exclude: tuple[str, ...] = ()
    include_bias: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        WEIGHT_CRITERIA.get(self.criterion)
        SCOPES.get(self.scope)
        for name, r in self.ratios.items():
            check_sparsity(r, f"ratios[{name!r}]")


def check_sparsity(value: float, what: str = "sparsity") -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{what} must be in [0, 1), got {value!r}")
    return float(value)


class UnstructuredPruner:
    """Holds the masks of one model and moves them towards a sparsity target."""

    def __init__(self, model: nn.Module, config: UnstructuredConfig | None = None) -> None:
        self.model = model
        self.config = config or UnstructuredConfig()
        self.criterion = WEIGHT_CRITERIA.get(self.config.criterion)
        self.masks = MaskSet(model)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.names = self._select()
        if not self.names:
            raise ConfigError("no prunable layer left: every Linear/Conv layer is excluded")

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

    def scores(self) -> dict[str, torch.Tensor]:
        out = {}
        for n, p in self.parameters().items():
            ctx = ScoreContext(name=n, param=p, generator=self.generator, grad=p.grad)
            out[n] = self.criterion.score(ctx).detach().float().cpu()
        return out

    def prune_to(self, target: float, step_fn: Callable[[float], float] | None = None) -> float:
        """Prunes until the scope's target is met; returns the resulting sparsity of the pruned set.

        Args:
            target: final sparsity in [0, 1) (ignored by the ``threshold`` scope).
            step_fn: maps a final sparsity to this step's (schedules use it); default identity.
        """
        if self.config.scope != "threshold":
            check_sparsity(target)
        scope = SCOPES.get(self.config.scope)
        current = {n: m.float().cpu() for n, m in self.current_masks().items()}
        new = scope(self.scores(), current, target, step_fn or (lambda s: s),
                    ratios=self.config.ratios, threshold=self.config.threshold)
        for n, m in new.items():
            self.masks.set(n, m)
        return self.sparsity()

    def sparsity(self) -> float:
        """Sparsity over the prunable set: S = 1 − Σ‖M‖₀ / Σ numel."""
        masks = self.current_masks()
        total = sum(m.numel() for m in masks.values())
        return 1.0 - sum(float(m.sum()) for m in masks.values()) / total

    def layer_sparsity(self) -> dict[str, float]:
        return {n: 1.0 - float(m.sum()) / m.numel() for n, m in self.current_masks().items()}

    def make_permanent(self) -> None:
        self.masks.make_permanent()
