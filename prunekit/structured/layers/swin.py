"""Old import path of the Swin replacements (:mod:`prunekit.graph.replacements.swin`; needs torchvision).

Kept so that models pickled (``torch.save``) before the classes moved to :mod:`prunekit.graph` load.
"""

from prunekit.graph.replacements.swin import PrunedShiftedWindowAttention, PrunedShiftedWindowAttentionV2

__all__ = ["PrunedShiftedWindowAttention", "PrunedShiftedWindowAttentionV2"]
