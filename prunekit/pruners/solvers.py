"""Layer-wise solvers of one-shot post-training pruning: given one Linear layer and statistics of its
calibration inputs, choose its mask (and, for SparseGPT, new values for the weights it keeps).

=============  ===========================  ==========================================  =====================
solver         statistics of the inputs X   mask / weights                              paper
=============  ===========================  ==========================================  =====================
``magnitude``  none                         lowest |W_oi| go; weights unchanged          Han et al. 2015
``wanda``      ‖X_i‖₂² per input            lowest |W_oi|·‖X_i‖₂ go; weights unchanged   Sun et al. 2023
``sparsegpt``  H = XᵀX                      OBS: lowest w²/[H⁻¹]_cc go; kept weights     Frantar & Alistarh
                                            updated to reconstruct X Wᵀ                  2023
=============  ===========================  ==========================================  =====================

Each solver compares scores within a group (``compare``): ``layer`` (the whole weight), ``row`` (each
output row loses the same fraction: Wanda's default) or, for SparseGPT, ``block`` (each block of
``blocksize`` columns, the paper's adaptive mask selection). N:M patterns are chosen per row and run of
M inputs. The scores are the importance registry's formulas (``l1``, ``wanda``:
:func:`prunekit.importance.wanda_scores`); SparseGPT is not a criterion but a reconstruction
(:mod:`prunekit.pruners.sparsegpt`), so it is registered here and only here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from prunekit.importance import real_tokens, wanda_scores
from prunekit.pruners.allocations import kth_mask, row_mask
from prunekit.pruners.granularity import nm_mask
from prunekit.pruners.sparsegpt import sparsegpt_prune
from prunekit.registry import Registry

__all__ = ["LAYER_SOLVERS", "LayerSolver", "LayerStats", "solver_names"]


@dataclass
class LayerStats:
    """What the calibration pass recorded about one Linear layer's inputs X (tokens × inputs).

    Attributes:
        tokens: rows of X seen.
        sq_sum: Σ_t x_ti² per input i (float64), when the solver needs it.
        hessian: XᵀX (float64, inputs × inputs), when the solver needs it.
    """

    tokens: int = 0
    sq_sum: torch.Tensor | None = None
    hessian: torch.Tensor | None = None

    def add(self, x: torch.Tensor, hessian: bool, sq_sum: bool, keep: torch.Tensor | None = None) -> None:
        """Accumulates the inputs ``x`` (…, inputs) of one forward.

        ``keep``: a (batch, tokens) 0/1 mask of the real tokens; where ``x`` is (batch, tokens, inputs) only
        those rows count (padding would otherwise add rows that the model never uses). An ``x`` of another
        shape (a pooled or first-token input) counts whole.
        """
        x = real_tokens(x, keep)
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        self.tokens += len(x)
        if sq_sum:
            s = x.pow(2).sum(0)
            self.sq_sum = s if self.sq_sum is None else self.sq_sum + s
        if hessian:
            h = x.T @ x
            self.hessian = h if self.hessian is None else self.hessian + h


#: ``solve(weight, stats, config) -> (new weight or None when unchanged, 0/1 mask)``
SolveFn = Callable[[torch.Tensor, LayerStats, Any], tuple[torch.Tensor | None, torch.Tensor]]


@dataclass(frozen=True)
class LayerSolver:
    """One solver of :data:`LAYER_SOLVERS`.

    Attributes:
        name: registry name (``LayerwiseConfig.solver``).
        needs: statistics of the layer inputs it reads: a subset of {"sq_sum", "hessian"}; empty: no data.
        compares: the comparison groups it supports; the first is its default.
        solve: chooses the mask (and new weights) of one layer.
        doc: the formula and the paper.
    """

    name: str
    needs: frozenset[str]
    compares: tuple[str, ...]
    solve: SolveFn
    doc: str = ""
    updates_weights: bool = field(default=False)


def _mask(scores: torch.Tensor, config: Any, compare: str) -> torch.Tensor:
    if config.granularity == "nm":
        return nm_mask(scores, tuple(config.nm))
    if compare == "row":
        return row_mask(scores, config.sparsity)
    return kth_mask(scores, round(config.sparsity * scores.numel()))


def _magnitude(weight, stats, config):
    return None, _mask(weight.detach().abs().float(), config, config.compare or "layer")


def _wanda(weight, stats, config):
    return None, _mask(wanda_scores(weight, stats.sq_sum), config, config.compare or "row")


def _sparsegpt(weight, stats, config):
    nm = tuple(config.nm) if config.granularity == "nm" else None
    return sparsegpt_prune(weight, stats.hessian, sparsity=None if nm else config.sparsity, nm=nm,
                           blocksize=config.blocksize, damp=config.damp, selection=config.compare or "block")


LAYER_SOLVERS: Registry[LayerSolver] = Registry("layer-wise solver")
for _s in (
    LayerSolver("magnitude", frozenset(), ("layer", "row"), _magnitude,
                "|W_oi| (Han et al. 2015), no data; the baseline of both papers (compared per layer)."),
    LayerSolver("wanda", frozenset({"sq_sum"}), ("row", "layer"), _wanda,
                "|W_oi|·‖X_i‖₂ compared within each output row (Sun et al. 2023, 'Wanda'); weights unchanged."),
    LayerSolver("sparsegpt", frozenset({"hessian"}), ("block", "row"), _sparsegpt,
                "Optimal-Brain-Surgeon reconstruction with H = XᵀX + λI (Frantar & Alistarh 2023, 'SparseGPT'): "
                "mask by w²/[H⁻¹]_cc per column block, kept weights updated.", updates_weights=True),
):
    LAYER_SOLVERS.register(_s.name)(_s)


def solver_names() -> list[str]:
    return LAYER_SOLVERS.names()
