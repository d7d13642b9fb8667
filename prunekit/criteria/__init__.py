"""Importance criteria (see :mod:`prunekit.criteria.weight`)."""

from prunekit.criteria.weight import WEIGHT_CRITERIA, Criterion, ScoreContext

__all__ = ["WEIGHT_CRITERIA", "Criterion", "ScoreContext"]
