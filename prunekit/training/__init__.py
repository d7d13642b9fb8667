"""Training, fine-tuning and evaluation."""

from prunekit.training.loop import (
    EvalResult,
    TrainConfig,
    default_device,
    evaluate,
    seed_everything,
    train,
)

__all__ = ["EvalResult", "TrainConfig", "default_device", "evaluate", "seed_everything", "train"]
