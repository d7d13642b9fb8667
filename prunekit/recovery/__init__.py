"""Recovery after pruning: fine-tuning, knowledge distillation from the dense model, BatchNorm re-estimation."""

from prunekit.recovery.bn import recalibrated_bn, reestimate_bn
from prunekit.recovery.distill import (
    RECOVERY,
    DistillConfig,
    RecoveryConfig,
    distill_loss,
    recover,
    recovery_loss,
)

__all__ = ["RECOVERY", "DistillConfig", "RecoveryConfig", "distill_loss", "recalibrated_bn", "recover", "recovery_loss",
           "reestimate_bn"]
