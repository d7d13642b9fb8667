"""prunekit: neural-network pruning for PyTorch.

Example:
    >>> import prunekit as pk
    >>> pk.prune_(model, pk.UnstructuredConfig(sparsity=0.9, importance="l1"), example_inputs=x)
    >>> pk.prune_(model, pk.StructuredConfig(budget=pk.Budget(macs_kept=0.5), importance="taylor"),
    ...           example_inputs=x, calibration=pk.Calibration(x_cal, y_cal))

The public API (:mod:`prunekit.api`) is loaded on first use (PEP 562), so that importing a lower layer
(``import prunekit.graph``) does not load the whole library above it.
"""

from __future__ import annotations

from prunekit import _interrupt

_interrupt.install_if_command()  # first: a Ctrl-C while the command loads ends it with one line (see _interrupt)

import importlib  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from prunekit._version import __version__  # noqa: E402
from prunekit.errors import (  # noqa: E402
    ConfigError,
    DataError,
    ModelLoadError,
    OutputExistsError,
    PrunekitError,
    PruningError,
    RecipeError,
    TrainingDivergedError,
    UnsupportedOpError,
)

if TYPE_CHECKING:
    from prunekit.api import (
        Budget,
        Calibration,
        LayerwiseConfig,
        PruneResult,
        StructuredConfig,
        UnstructuredConfig,
        list_criteria,
        prune_,
    )
    from prunekit.graph import Inputs
    from prunekit.structured.hf import save_hf
    from prunekit.structured.serialize import load_pruned, save_pruned

#: public name -> the module that defines it (loaded on first access)
_API = {**{name: "prunekit.api" for name in ("Budget", "Calibration", "LayerwiseConfig", "PruneResult",
                                             "StructuredConfig", "UnstructuredConfig", "list_criteria", "prune_")},
        # the one saved-model format (pruned.json + model.safetensors); loading never runs code a file names
        "load_pruned": "prunekit.structured.serialize", "save_pruned": "prunekit.structured.serialize",
        # positional and keyword example inputs together: prune_(model, config, example_inputs=Inputs(a, b, k=c))
        "Inputs": "prunekit.graph",
        # a transformers model as a plain Hugging Face directory (loads without prunekit)
        "save_hf": "prunekit.structured.hf"}

__all__ = [
    "__version__",
    "Budget",
    "Calibration",
    "Inputs",
    "LayerwiseConfig",
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
    "TrainingDivergedError",
    "UnsupportedOpError",
    "load_pruned",
    "save_hf",
    "save_pruned",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
