"""prunekit: neural-network pruning for PyTorch."""

from prunekit._version import __version__
from prunekit.errors import (
    ConfigError,
    DataError,
    ModelLoadError,
    OutputExistsError,
    PrunekitError,
    PruningError,
    RecipeError,
    UnsupportedOpError,
)

__all__ = [
    "__version__",
    "ConfigError",
    "DataError",
    "ModelLoadError",
    "OutputExistsError",
    "PrunekitError",
    "PruningError",
    "RecipeError",
    "UnsupportedOpError",
]
