"""Recovery after pruning: fine-tuning and knowledge distillation from the dense model."""

from prunekit.recovery.distill import (
    RECOVERY,
    DistillConfig,
    RecoveryConfig,
    distill_loss,
    recover,
    recovery_loss,
)

__all__ = ["RECOVERY", "DistillConfig", "RecoveryConfig", "distill_loss", "recover", "recovery_loss"]
