"""Old import path of :class:`~prunekit.graph.PrunedMultiheadAttention`.

Kept so that models pickled (``torch.save``) before the class moved to :mod:`prunekit.graph` load.
"""

from prunekit.graph import PrunedMultiheadAttention

__all__ = ["PrunedMultiheadAttention"]
