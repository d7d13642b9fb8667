"""Model sources: ``SOURCE:WHERE`` model names (``hf:PATH``, zoo names), one registry entry per source.

A source knows how to check ``WHERE`` cheaply (a recipe is validated before anything runs) and how to build
the model. A colon name whose prefix is not a registered source is a user's ``package.module:factory``.

Example:
    >>> split_source("hf:/models/minilm")
    ('hf', '/models/minilm')
    >>> split_source("mypkg.nets:small")
    (None, 'mypkg.nets:small')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from prunekit.errors import ConfigError
from prunekit.models.builtin import MODELS
from prunekit.registry import Registry

__all__ = ["MODEL_SOURCES", "ModelSource", "check_model_name", "split_source"]


@dataclass(frozen=True)
class ModelSource:
    """One ``SOURCE:`` prefix.

    Attributes:
        build: ``build(where, input_shape, num_classes, **kwargs) -> nn.Module``.
        check: ``check(where)`` raises a one-line ConfigError/ModelLoadError for a bad ``where`` (default: none).
        kind: what the models take: ``image`` (tensors) or ``text`` (token ids from the model's tokenizer).
        summary: one line for errors and docs.
    """

    build: Callable[..., nn.Module]
    check: Callable[[str], None] | None = None
    kind: str = "image"
    summary: str = ""


#: Model sources by prefix (``hf``, registered by :mod:`prunekit.models.hf`; the zoos add theirs).
MODEL_SOURCES: Registry = Registry("model source")


def split_source(name: str) -> tuple[str | None, str]:
    """``(source, where)`` for a registered ``SOURCE:WHERE`` name, else ``(None, name)``."""
    source, sep, where = name.partition(":")
    if sep and source in MODEL_SOURCES:
        return source, where
    return None, name


def check_model_name(name: str) -> str:
    """Validates a model name without building it; returns its kind (``image``, ``text``, ``custom``).

    Raises:
        ConfigError: an unknown built-in name (listing them), ``SOURCE:`` with nothing after it, or what the
            source's own check says.
    """
    source, where = split_source(name)
    if source is not None:
        if not where.strip():
            raise ConfigError(f"model {name!r} names nothing after {source}: (write {source}:PATH)")
        spec: ModelSource = MODEL_SOURCES.get(source)
        if spec.check is not None:
            spec.check(where)
        return spec.kind
    if ":" in name:
        return "custom"
    MODELS.get(name)
    return "image"
