"""prunekit: neural-network pruning for PyTorch.

Example:
    >>> import prunekit as pk
    >>> pk.prune_(model, pk.UnstructuredConfig(sparsity=0.9, importance="l1"), example_inputs=x)
    >>> pk.prune_(model, pk.StructuredConfig(budget=pk.Budget(macs_kept=0.5), importance="taylor"),
    ...           example_inputs=x, calibration=pk.Calibration(x_cal, y_cal))
"""

from prunekit._version import __version__
from prunekit.api import (
    Budget,
    Calibration,
    PruneResult,
    StructuredConfig,
    UnstructuredConfig,
    list_criteria,
    prune_,
)
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
    "Budget",
    "Calibration",
    "PruneResult",
    "StructuredConfig",
    "UnstructuredConfig",
    "list_criteria",
    "prune_",
    "ConfigError",
    "DataError",
    "ModelLoadError",
    "OutputExistsError",
    "PrunekitError",
    "PruningError",
    "RecipeError",
    "UnsupportedOpError",
]
