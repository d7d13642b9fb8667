"""Mask-based pruning of Linear and Conv layers at any granularity (element, vector, kernel, filter, N:M).

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

from prunekit.criteria import MODEL_PASSES, ScoreContext, get_criterion
from prunekit.errors import ConfigError
from prunekit.masks import MaskSet
from prunekit.pruners.granularity import GRANULARITIES, check_nm, nm_mask
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
        criterion: name in ``WEIGHT_CRITERIA`` (``l1``, ``l2``, ``random``) or ``SALIENCY_CRITERIA``
            (``snip``, ``synflow`` at initialisation; on a trained model ``gradient``, ``taylor``,
            ``hessian``, ``loss_change`` and the single-weight forms of the channel criteria ``apoz``,
            ``mean_activation``, ``mi``, ``bn_scale``, ``fpgm``: all but ``fpgm`` need a calibration
            batch, see :class:`UnstructuredPruner`).
        scope: name in ``SCOPES`` (``layer``, ``global``, ``ratios``, ``threshold``).
        ratios: for scope ``ratios``: parameter-name pattern → sparsity.
        threshold: for scope ``threshold``: weights scoring below it are pruned.
        exclude: parameter-name or module-name patterns (fnmatch) left dense, e.g. ``["fc.*"]``.
        include_bias: also prune biases (scored like weights); by default biases stay dense.
        seed: seeds the ``random`` criterion.
        granularity: name in ``GRANULARITIES`` (``element``, ``vector``, ``kernel``, ``filter``, ``nm``);
            for group granularities the target counts groups (equal to weights within a layer).
        nm: (N, M) of the ``nm`` granularity, e.g. (2, 4): sparsity 1 − N/M whatever the target.
    """

    criterion: str = "l1"
    scope: str = "global"
    ratios: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None
    exclude: tuple[str, ...] = ()
    include_bias: bool = False
    seed: int = 0
    granularity: str = "element"
    nm: tuple[int, int] = (2, 4)

    def __post_init__(self) -> None:
        get_criterion(self.criterion)
        SCOPES.get(self.scope)
        GRANULARITIES.get(self.granularity)
        for name, r in self.ratios.items():
            check_sparsity(r, f"ratios[{name!r}]")


def check_sparsity(value: float, what: str = "sparsity") -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{what} must be in [0, 1), got {value!r}")
    return float(value)


class UnstructuredPruner:
    """Holds the masks of one model and moves them towards a sparsity target.

    Args:
        model: the model; masks are installed on it.
        config: what to prune and how.
        calibration: an ``(x, y)`` batch for the model-level criteria (``snip`` and ``taylor`` use the
            loss on it, ``apoz`` the activations, ``synflow`` and ``bn_scale`` only its input shape); may
            also be set later as ``pruner.calibration``.
    """

    def __init__(self, model: nn.Module, config: UnstructuredConfig | None = None,
                 calibration: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.model = model
        self.config = config or UnstructuredConfig()
        self.criterion = get_criterion(self.config.criterion)
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

    def _model_pass(self) -> dict[str, torch.Tensor | None]:
        """What a model-level criterion computes before scoring (``MODEL_PASSES``); None for the rest."""
        params = self.parameters()
        name = self.criterion.name
        if name not in MODEL_PASSES:
            return dict.fromkeys(params)
        if self.calibration is None and self.criterion.needs & {"data", "input_shape"}:
            raise ConfigError(f"criterion {name!r} needs a calibration batch (it scores with "
                              f"{', '.join(sorted(self.criterion.needs))}): pass calibration=(x, y) to "
                              "UnstructuredPruner")
        return MODEL_PASSES[name](self.model, list(params), self.calibration)

    def scores(self) -> dict[str, torch.Tensor]:
        out = {}
        stats = self._model_pass()
        for n, p in self.parameters().items():
            ctx = ScoreContext(name=n, param=p, generator=self.generator, stat=stats[n])
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
        current = {n: m.float().cpu() for n, m in self.current_masks().items()}
        scores = self.scores()
        g = self.granularity
        if g.fixed_pattern:  # N:M: the pattern, not a scope, sets the mask
            masked = {n: torch.where(current[n] > 0, s, torch.full_like(s, -torch.inf))
                      for n, s in scores.items()}
            new = {n: nm_mask(s, self.config.nm) * current[n] for n, s in masked.items()}
        else:
            scope = SCOPES.get(self.config.scope)
            group_new = scope({n: g.group_scores(s) for n, s in scores.items()},
                              {n: g.group_mask(m) for n, m in current.items()},
                              target, step_fn or (lambda s: s),
                              ratios=self.config.ratios, threshold=self.config.threshold)
            new = {n: g.expand(m, current[n].shape) * current[n] for n, m in group_new.items()}
        for n, m in new.items():
            self.masks.set(n, m)
        if g.name == "filter":
            self._mask_filter_biases(new)
        return self.sparsity()

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
