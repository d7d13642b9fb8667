"""Weight masks (W ⊙ M) for unstructured and fine-grained pruning."""

from prunekit.masks.maskset import MaskSet

__all__ = ["MaskSet"]
