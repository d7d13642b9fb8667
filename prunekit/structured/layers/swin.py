"""Old import path of the Swin replacements (defined in :mod:`prunekit.graph`; needs torchvision).

Kept so that models pickled (``torch.save``) before the classes moved to :mod:`prunekit.graph` load.
"""

import torchvision.models.swin_transformer  # noqa: F401  (its replacements register once it is in use)

from prunekit.graph import replacement_named

PrunedShiftedWindowAttention = replacement_named("PrunedShiftedWindowAttention")
PrunedShiftedWindowAttentionV2 = replacement_named("PrunedShiftedWindowAttentionV2")

__all__ = ["PrunedShiftedWindowAttention", "PrunedShiftedWindowAttentionV2"]
