"""The one importance registry: every criterion of prunekit, with its needs and its forms.

Built here, once, from the criterion modules' ``CRITERIA`` lists; nothing else adds to it.
"""

from __future__ import annotations

from prunekit.errors import ConfigError
from prunekit.importance import activation, gradient, loss_change, magnitude
from prunekit.importance.base import DATA_NEEDS, Importance
from prunekit.registry import Registry

__all__ = ["IMPORTANCE", "KINDS", "get", "names"]

KINDS = ("group", "weight")

IMPORTANCE: Registry[Importance] = Registry("criterion")
for _module in (magnitude, gradient, activation, loss_change):
    for _c in _module.CRITERIA:
        IMPORTANCE.register(_c.name)(_c)


def names(kind: str | None = None, at_init: bool | None = None, data_free: bool | None = None) -> list[str]:
    """Registered criterion names, sorted: all of them, or those with a ``group`` / ``weight`` form.

    Args:
        kind: None, ``"group"`` (structured pruning, allocation, sensitivity) or ``"weight"``
            (unstructured pruning).
        at_init: True: only criteria for untrained models (snip, synflow); False: only the others.
        data_free: True: only criteria that need no calibration data (an example input may be needed).
    """
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown criterion kind {kind!r}; choose one of: {', '.join(KINDS)} (or None for all)")
    return [n for n in IMPORTANCE.names()
            if (kind is None or kind in IMPORTANCE.get(n).kinds)
            and (at_init is None or IMPORTANCE.get(n).at_init == at_init)
            and (data_free is None or (not IMPORTANCE.get(n).needs & DATA_NEEDS) == data_free)]


def get(name: str, kind: str | None = None) -> Importance:
    """The criterion ``name``; with ``kind``, it must have that form.

    Raises:
        ConfigError: unknown name, or no form of that kind; the message lists the names that fit.
    """
    valid = names(kind)
    if name not in valid:
        why = (f"criterion {name!r} has no {kind} form (it has only a {IMPORTANCE.get(name).kinds[0]} form)"
               if name in IMPORTANCE else f"unknown criterion {name!r}")
        raise ConfigError(f"{why}; choose one of: {', '.join(valid)}")
    return IMPORTANCE.get(name)
