"""The exceptions prunekit raises.

Every error a user can cause derives from :class:`PrunekitError`, so callers (and the CLI) can
catch one type. Messages name the bad value, the valid choices and the fix.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

__all__ = [
    "strict_fields",
    "PrunekitError",
    "ConfigError",
    "RecipeError",
    "DataError",
    "ModelLoadError",
    "PruningError",
    "UnsupportedOpError",
    "OutputExistsError",
    "OutputWriteError",
    "RunStopped",
    "TrainingDivergedError",
    "ExportError",
    "MissingDependencyError",
]


class PrunekitError(Exception):
    """Base class of every error caused by user input."""


class ConfigError(PrunekitError, ValueError):
    """A bad argument to a public function (unknown name, value out of range)."""


class RecipeError(ConfigError):
    """A recipe that fails validation: unknown key, wrong type or bad value."""


class DataError(PrunekitError):
    """A dataset that cannot be found or read."""


class ModelLoadError(PrunekitError):
    """A model or checkpoint that cannot be built or loaded."""


class PruningError(PrunekitError):
    """A pruning request that cannot be carried out on this model."""


class UnsupportedOpError(PruningError):
    """The model uses an operation that structured pruning cannot follow."""


class OutputExistsError(PrunekitError):
    """The output directory already holds results."""


class OutputWriteError(PrunekitError):
    """The output directory (or the files beside it: lock, staging directory) cannot be written, or a run's
    checkpoint cannot be resumed; the message says where any finished work is."""


class RunStopped(KeyboardInterrupt):
    """A run stopped by a signal (SIGTERM, or SIGINT: Ctrl-C). A KeyboardInterrupt, so that it passes every
    ``except Exception`` and cleanup runs as for Ctrl-C; ``where`` (set by the runner) says where the work is."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.where: str | None = None


class TrainingDivergedError(PrunekitError):
    """Training produced a non-finite loss (NaN or inf): the run diverged, usually from too high a
    learning rate. Raised at the first such step so a diverged run is never reported as a result."""


class ExportError(PrunekitError):
    """A model that cannot be exported, or whose export does not compute what the model computes."""


class MissingDependencyError(PrunekitError, ImportError):
    """An optional dependency (an extra such as ``prunekit[deploy]``) is not installed."""


def strict_fields(hints: Mapping[str, str] = {}):  # noqa: B006 (read only)
    """Class decorator for a config dataclass: an unknown keyword argument raises a :class:`ConfigError`
    naming the field and the fix (``hints[name]``, else the valid fields), not a TypeError."""

    def wrap(cls):
        init = cls.__init__
        known = {f.name for f in dataclasses.fields(cls)}

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            for key in kwargs:
                if key not in known:
                    hint = hints.get(key, f"valid fields: {', '.join(sorted(known))}")
                    raise ConfigError(f"{cls.__name__} has no field {key!r}: {hint}")
            init(self, *args, **kwargs)

        cls.__init__ = __init__
        return cls

    return wrap
