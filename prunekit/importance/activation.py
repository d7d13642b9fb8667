"""Criteria from the activations a channel carries on calibration data.

A channel's activation a_c is the input of the layers that read it (after BN and ReLU in a conv block),
over all samples and positions. The single-weight form scales |w| by the score of the input channel
the weight reads.

================  ==========================================  ==========================================
name              group form (per channel c)                  single-weight form
================  ==========================================  ==========================================
apoz              1 − APoZ_c, APoZ_c = mean 1[a_c = 0]         |w| · (1 − APoZ_i)   (Hu et al. 2016)
mean_activation   mean |a_c|                                  |w| · mean |a_i|     (Molchanov et al. 2017)
mi                I(A_c; Y), equal-frequency histograms        |w| · I(A_i; Y)      (Ganesh et al. 2020)
wanda             —                                           |w| · ‖X_i‖₂          (Sun et al. 2023)
================  ==========================================  ==========================================

``wanda`` (Sun, Liu, Bair & Kolter 2023, "A simple and effective pruning approach for large language
models") scores S_oi = |W_oi| · ‖X_i‖₂, the L2 norm of input feature i over every calibration token;
the paper compares scores within each output row (``allocation="row"``), and prunes transformers block
by block on the pruned blocks' outputs (:class:`~prunekit.LayerwiseConfig` with ``solver="wanda"``).
"""

from __future__ import annotations

import numpy as np
import torch

from prunekit.errors import ConfigError
from prunekit.graph import Group
from prunekit.importance._channels import layer_inputs, scaled
from prunekit.importance.base import Importance, MemberScores, ScoreInputs, WeightInputs
from prunekit.importance.calibration import consumers

__all__ = ["CRITERIA", "MI_BINS", "histogram_mi", "wanda_scores"]

#: default number of equal-frequency bins of ``mi``
MI_BINS = 8


def histogram_mi(feature: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """I(A; Y) in nats of one feature with integer labels, A binned into ``bins`` equal-frequency bins."""
    edges = np.unique(np.quantile(feature, np.linspace(0, 1, bins + 1)[1:-1]))
    a = np.searchsorted(edges, feature, side="right")
    joint = np.zeros((len(edges) + 1, int(labels.max()) + 1))
    np.add.at(joint, (a, labels), 1.0)
    joint /= joint.sum()
    pa, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ py)[nz])).sum())


# ----------------------------------------------------------------------------- group forms
def _activation(inputs: ScoreInputs, group: Group, table: str) -> MemberScores:
    stats = inputs.stats
    out = {}
    for m, _ in consumers(inputs.graph, group.members):
        key = (m.name, m.dim)
        if key in getattr(stats, table) and stats.count.get(key):
            out[key] = getattr(stats, table)[key] / stats.count[key]
    if not out:
        raise ConfigError(f"group {group.name!r}: no layer reads its channels during the calibration pass, so "
                          f"activation criteria cannot score it; exclude it or use a weight criterion (l2, fpgm)")
    return out


def _apoz_group(inputs: ScoreInputs, group: Group) -> MemberScores:
    return {k: 1.0 - v for k, v in _activation(inputs, group, "zeros").items()}


def _mean_activation_group(inputs: ScoreInputs, group: Group) -> MemberScores:
    return _activation(inputs, group, "mean_abs")


def _mi_group(inputs: ScoreInputs, group: Group) -> MemberScores:
    stats = inputs.stats
    bins = int(inputs.options.get("bins", MI_BINS))
    out = {}
    for m, _ in consumers(inputs.graph, group.members):
        key = (m.name, m.dim)
        if key not in stats.samples:
            continue
        feats = np.concatenate(stats.samples[key])
        out[key] = np.array([histogram_mi(feats[:, u], stats.labels, bins) for u in range(group.size)])
    if not out:
        raise ConfigError(f"group {group.name!r}: no layer reads its channels, so 'mi' cannot score it")
    return out


# ----------------------------------------------------------------------------- single-weight forms
def wanda_scores(weight: torch.Tensor, sq_sum: torch.Tensor) -> torch.Tensor:
    """Wanda's score of a Linear weight (C_out, C_in): S_oi = |W_oi| · ‖X_i‖₂, with ``sq_sum[i]`` = ‖X_i‖₂² = Σ x_i²
    over all calibration tokens. The one formula of ``wanda``, shared by the criterion and the layer-wise solver.

    Example:
        >>> wanda_scores(torch.tensor([[1., -2.], [3., 1.]]), torch.tensor([4., 1.]))
        tensor([[2., 2.],
                [6., 1.]])
    """
    factor = sq_sum.to(weight.device, torch.float32).clamp_min(0).sqrt()
    return weight.detach().abs().float() * factor.reshape(1, -1, *([1] * (weight.dim() - 2)))


def _wanda_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    stats = layer_inputs(w.model, w.names, w.batch[0], keywords=w.keywords)
    return scaled(w.model, w.names, {n: s["sq_sum"].sqrt() for n, s in stats.items()}, 1)


def _apoz_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    stats = layer_inputs(w.model, w.names, w.batch[0], keywords=w.keywords)
    return scaled(w.model, w.names, {n: 1.0 - s["zeros"] for n, s in stats.items()}, 1)


def _mean_activation_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    stats = layer_inputs(w.model, w.names, w.batch[0], keywords=w.keywords)
    return scaled(w.model, w.names, {n: s["mean_abs"] for n, s in stats.items()}, 1)


def _mi_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    stats = layer_inputs(w.model, w.names, w.batch[0], samples=True, keywords=w.keywords)
    labels = w.batch[1].cpu().numpy().astype(np.int64)
    factors = {n: torch.tensor([histogram_mi(s["means"][:, i], labels, MI_BINS)
                                for i in range(s["means"].shape[1])], dtype=torch.float32)
               for n, s in stats.items()}
    return scaled(w.model, w.names, factors, 1)


ACT = frozenset({"data", "activations"})
CRITERIA = [
    Importance("apoz", ACT, _apoz_group, _apoz_weight,
               "Average Percentage of Zeros (Hu et al. 2016, 'Network Trimming'): group 1 − APoZ_c, APoZ_c the "
               "fraction of exact zeros of a_c; weight |w|·(1 − APoZ_i) of its input channel i."),
    Importance("mean_activation", ACT, _mean_activation_group, _mean_activation_weight,
               "Mean activation (Molchanov et al. 2017, §2.2): group mean |a_c|; weight |w|·mean |a_i| of its input "
               "channel (cf. Wanda, Sun et al. 2024)."),
    Importance("mi", ACT | {"labels"}, _mi_group, _mi_weight,
               "Mutual information of a channel's spatially averaged activation with the labels, equal-frequency "
               "histograms of 8 bins (cf. Ganesh et al. 2020, 'MINT'): group I(A_c; Y); weight |w|·I(A_i; Y)."),
    Importance("wanda", ACT, None, _wanda_weight,
               "Pruning by weights and activations (Sun et al. 2023, 'Wanda'): weight |W_oi|·‖X_i‖₂, the L2 norm of "
               "input channel i over all calibration tokens (and positions); compare within output rows "
               "(allocation 'row')."),
]
