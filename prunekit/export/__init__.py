"""Export for inference: turn a (pruned) training model into the faster model one deploys.

- :func:`fold_batchnorm`: merge each BatchNorm into the convolution before it.
- :func:`prepare_inference`: a copy in eval mode, BatchNorm folded, optionally in channels-last
  memory format (:class:`InferenceConfig`).
"""

from prunekit.export.fold import fold_batchnorm, foldable_pairs
from prunekit.export.inference import InferenceConfig, prepare_inference

__all__ = ["InferenceConfig", "fold_batchnorm", "foldable_pairs", "prepare_inference"]
