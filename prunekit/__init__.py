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

# The one saved-model format (pruned.json + model.safetensors) and its loader; loading never runs code a file names.
from prunekit.structured.serialize import load_pruned, save_pruned  # noqa: E402

__all__ += ["load_pruned", "save_pruned"]
