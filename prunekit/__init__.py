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
# Imported on first use, so `import prunekit.graph` does not load prunekit.structured.
__all__ += ["load_pruned", "save_pruned"]


def __getattr__(name: str):
    if name in ("load_pruned", "save_pruned"):
        from prunekit.structured import serialize

        return getattr(serialize, name)
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
