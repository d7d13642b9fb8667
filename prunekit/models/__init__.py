"""Models: the built-in registry, model sources (``hf:PATH``, ...), users' factories
(``package.module:factory``) and checkpoints.

A model name is one of: a built-in name (:data:`MODELS`); ``SOURCE:WHERE`` for a source registered in
:data:`MODEL_SOURCES` (``hf:PATH``: a local Hugging Face model directory, see :mod:`prunekit.models.hf`;
``torchvision:NAME`` and ``timm:NAME``: zoo models built without weights, see :mod:`prunekit.zoo`);
anything else with a colon is ``package.module:factory``.

Example:
    >>> model = build_model("lenet300", input_shape=(1, 28, 28), num_classes=10)
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from prunekit.errors import ConfigError, ModelLoadError
from prunekit.io.checkpoint import load_weights_into
from prunekit.models import hf as _hf  # noqa: F401  (registers the hf: model source)
from prunekit.models.builtin import MODELS, check_builtin_kwargs
from prunekit.models.sources import (
    MODEL_SOURCES,
    ModelSource,
    check_model_name,
    data_options,
    source_of,
    split_source,
)

__all__ = ["MODELS", "MODEL_SOURCES", "ModelSource", "build_model", "check_model_name", "data_options",
           "import_factory", "source_of", "split_source"]


def import_factory(spec: str):
    """Resolves ``"package.module:factory"`` to the callable it names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model {spec!r}: expected 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelLoadError(f"model {spec!r}: cannot import module {module_name!r} ({e})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelLoadError(f"model {spec!r}: module {module_name!r} has no callable {attr!r}")
    return factory


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    kwargs: dict[str, Any] | None = None,
    checkpoint: str | None = None,
) -> nn.Module:
    """Builds a registered model, or a user's ``package.module:factory``, and loads its weights.

    A built-in factory and a model source receive ``input_shape`` and ``num_classes``; a user's factory
    receives only ``kwargs``. ``checkpoint`` (``.safetensors`` or a torch state dict) is loaded strictly.
    """
    kwargs = dict(kwargs or {})
    source, where = split_source(name)
    if source is not None:
        model = MODEL_SOURCES.get(source).build(where, input_shape, num_classes, **kwargs)
    elif ":" in name:
        factory = import_factory(name)
        try:
            model = factory(**kwargs)
        except Exception as e:
            raise ModelLoadError(f"model {name!r}: the factory failed: {type(e).__name__}: {e}") from e
        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"model {name!r}: the factory returned {type(model).__name__}, "
                                 "not a torch.nn.Module")
    else:
        check_builtin_kwargs(name, kwargs)
        model = MODELS.get(name)(input_shape, num_classes, **kwargs)
    if checkpoint:
        load_weights_into(model, checkpoint)
    return model
