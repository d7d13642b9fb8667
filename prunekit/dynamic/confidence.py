"""How sure an exit is, as a number in [0, 1]: an input leaves at the first exit whose confidence is *above*
its threshold (so a threshold of 1 never exits).

- ``max_softmax``: ``max_c softmax(z)_c`` (BranchyNet's softmax-score variant).
- ``entropy``: ``1 − H(softmax(z)) / log C`` (BranchyNet, Teerapittayanon et al. 2016, exits on low entropy;
  normalised here so one threshold scale serves both).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from prunekit.errors import ConfigError
from prunekit.registry import Registry

__all__ = ["CONFIDENCE", "check_thresholds"]

#: Confidence scores by name: ``fn(logits (N, C)) -> (N,) in [0, 1]``.
CONFIDENCE: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("exit confidence")


@CONFIDENCE.register("max_softmax")
def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.float().softmax(-1).amax(-1)


@CONFIDENCE.register("entropy")
def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = logits.float().log_softmax(-1)
    h = -(logp.exp() * logp).sum(-1)
    return 1.0 - h / math.log(logits.shape[-1])


def check_thresholds(thresholds: list[float] | tuple[float, ...], exits: int | None = None) -> None:
    """Raises :class:`ConfigError` unless every threshold is in (0, 1] (and, with ``exits``, one per exit)."""
    for t in thresholds:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < t <= 1.0:
            raise ConfigError(f"exit threshold {t!r} is outside (0, 1]: an input exits when its confidence (in "
                              "[0, 1]) is above the threshold; use e.g. 0.9, or 1 for an exit never taken")
    if exits is not None and len(thresholds) not in (1, exits):
        raise ConfigError(f"{len(thresholds)} thresholds for {exits} exits: give one per exit or one for all")
