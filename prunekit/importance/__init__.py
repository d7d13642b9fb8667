"""What to prune: ONE registry of importance criteria, for groups of channels and for single weights.

Every criterion lives in :data:`IMPORTANCE` as an :class:`Importance`: the inputs it ``needs``
(checked before any work), a group form (structured pruning, allocation, sensitivity: scored by
:func:`score_groups`) and/or a single-weight form (unstructured pruning: :func:`score_weights`). One
name is one formula everywhere; :func:`names` lists the names of each kind.

================  =====  ======  ====================================  =========================================
name              group  weight  needs                                 paper
================  =====  ======  ====================================  =========================================
l1                ✓      ✓       weights                               Han et al. 2015; Li et al. 2017
l2                ✓      ✓       weights                               (root-mean-square magnitude)
random            ✓      ✓       —                                     control
fpgm              ✓      ✓       weights                               He et al. 2019 (geometric median)
bn_scale          ✓              weights                               Liu et al. 2017 (network slimming, |γ|)
bn_folded                ✓       weights, example_inputs               BN-folded |w|·|γ|/√(σ²+ε)
gradient          ✓      ✓       data, labels, gradients               seed 000; Mozer & Smolensky 1989
taylor            ✓      ✓       data, labels, gradients               Molchanov et al. 2019
hessian           ✓      ✓       data, labels, gradients               LeCun et al. 1990 (OBD, Fisher diagonal)
mask_gradient     ✓      ✓       data, labels, gradients               Michel et al. 2019 (head-mask gradient)
apoz              ✓      ✓       data, activations                     Hu et al. 2016 (Network Trimming)
mean_activation   ✓      ✓       data, activations                     Molchanov et al. 2017
mi                ✓      ✓       data, labels, activations             Ganesh et al. 2020 (mutual information)
wanda                    ✓       data, activations                     Sun et al. 2023 (|W_oi|·‖X_i‖₂)
loss_change       ✓      ✓       data, labels, loss                    Mozer & Smolensky 1989 (measured ΔL)
snip                     ✓       data, labels, gradients, at_init      Lee et al. 2019
synflow                  ✓       example_inputs, at_init               Tanaka et al. 2020
================  =====  ======  ====================================  =========================================
"""

from prunekit.importance.activation import wanda_scores
from prunekit.importance.base import DATA_NEEDS, NEEDS, Importance, ScoreInputs, WeightInputs
from prunekit.importance.calibration import (
    Calibration,
    CalibrationStats,
    call_model,
    collect_stats,
    real_tokens,
    recording,
)
from prunekit.importance.masking import zeroed
from prunekit.importance.registry import IMPORTANCE, KINDS, get, names
from prunekit.importance.score import (
    NORMALIZATIONS,
    REDUCTIONS,
    ImportanceConfig,
    check_needs,
    score_groups,
    score_weights,
)

__all__ = ["DATA_NEEDS", "IMPORTANCE", "KINDS", "NEEDS", "NORMALIZATIONS", "REDUCTIONS", "Calibration",
           "CalibrationStats", "Importance", "ImportanceConfig", "ScoreInputs", "WeightInputs", "call_model",
           "check_needs", "collect_stats", "get", "names", "real_tokens", "recording", "score_groups", "score_weights",
           "wanda_scores", "zeroed"]
