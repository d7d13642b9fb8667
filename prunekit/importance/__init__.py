"""What to prune: importance criteria for units of dependency groups and for single weights.

Every criterion lives in :data:`IMPORTANCE` with the inputs it ``needs`` (calibration ``data``,
``labels``, ``gradients``, ``activations``); :func:`score_groups` checks them before any work,
makes one calibration pass (hooks removed even on error) and aggregates the per-member scores.

==================  ==================================  ===========================================
name                needs                               paper
==================  ==================================  ===========================================
lp                  —                                   Li et al. 2017 (L1 filter norm)
random              —                                   control
fpgm                —                                   He et al. 2019 (geometric median)
bn_scale            —                                   Liu et al. 2017 (network slimming)
gradient            data, labels, gradients             accumulated |∂L/∂w| (seed 000)
taylor              data, labels, gradients             Molchanov et al. 2019 (first order)
hessian             data, labels, gradients             LeCun et al. 1990 (OBD, Fisher diagonal)
apoz                data, activations                   Hu et al. 2016 (Network Trimming)
mean_activation     data, activations                   Molchanov et al. 2017
mi                  data, labels, activations           mutual information with the labels
loss_change         data, labels                        measured ΔL of removing the unit
==================  ==================================  ===========================================

The data-free ``fpgm`` is also registered in :data:`prunekit.structured.GROUP_CRITERIA`, so
``prune(model, x, criterion="fpgm")`` and ``prunekit check --criterion fpgm`` work.
"""

from __future__ import annotations

import numpy as np

from prunekit.graph import DependencyGraph, Group
from prunekit.importance import loss_change as _loss_change  # noqa: F401  (registers loss_change)
from prunekit.importance.calibration import Calibration, CalibrationStats, collect_stats, recording
from prunekit.importance.criteria import IMPORTANCE, Importance, ScoreInputs
from prunekit.importance.masking import zeroed
from prunekit.importance.score import ImportanceConfig, check_needs, score_groups, score_weights
from prunekit.structured.criteria import GROUP_CRITERIA

__all__ = ["IMPORTANCE", "Calibration", "CalibrationStats", "Importance", "ImportanceConfig", "ScoreInputs",
           "check_needs", "collect_stats", "recording", "score_groups", "score_weights", "zeroed"]

#: Criteria that need no data, exposed through the structured engine's ``(graph, group)`` interface.
SHARED_GROUP_CRITERIA = ("fpgm",)


def _shared(name: str):
    def criterion(graph: DependencyGraph, group: Group) -> np.ndarray:
        return score_groups(graph, ImportanceConfig(name), None, [group])[group.name]

    criterion.__doc__ = IMPORTANCE.get(name).doc
    return criterion


for _name in SHARED_GROUP_CRITERIA:
    if _name not in GROUP_CRITERIA:
        GROUP_CRITERIA.register(_name)(_shared(_name))
