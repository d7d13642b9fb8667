"""Importance criteria: per weight (:mod:`.weight`) and model-level saliency (:mod:`.saliency`)."""

from prunekit.criteria.saliency import MODEL_PASSES, SALIENCY_CRITERIA, criterion_names, get_criterion
from prunekit.criteria.weight import WEIGHT_CRITERIA, Criterion, ScoreContext

__all__ = ["MODEL_PASSES", "SALIENCY_CRITERIA", "WEIGHT_CRITERIA", "Criterion", "ScoreContext",
           "criterion_names", "get_criterion"]
