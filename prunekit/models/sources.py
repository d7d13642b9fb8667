"""Model sources: ``SOURCE:WHERE`` model names (``hf:PATH``, ``torchvision:NAME``, ``timm:NAME``), one registry.

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

__all__ = ["MODEL_SOURCES", "ModelSource", "check_model_name", "data_options", "source_of", "split_source"]


@dataclass(frozen=True)
class ModelSource:
    """One ``SOURCE:`` prefix.

    Attributes:
        build: ``build(where, input_shape, num_classes, **kwargs) -> nn.Module``.
        check: ``check(where)`` raises a one-line ConfigError/ModelLoadError for a bad ``where`` (default: none).
        kind: what the models take: ``image`` (tensors) or ``text`` (token ids from the model's tokenizer).
        summary: one line for errors and docs.
        where: what follows the prefix (``PATH``, ``NAME``), for errors.
        zoo: a model-zoo builder (:mod:`prunekit.zoo`): ``num_classes`` is one of its keyword arguments, so a
            saved model's constructor arguments carry it, and image folders get the family's preprocessing.
    """

    build: Callable[..., nn.Module]
    check: Callable[[str], None] | None = None
    kind: str = "image"
    summary: str = ""
    where: str = "PATH"
    zoo: bool = False


#: Model sources by prefix: ``torchvision`` and ``timm`` (below), ``hf`` (registered by :mod:`prunekit.models.hf`).
MODEL_SOURCES: Registry = Registry("model source")


def _zoo_source(prefix: str, summary: str) -> ModelSource:
    def build(where: str, input_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Module:
        from prunekit import zoo  # weights=None; torchvision/timm are imported only when a zoo model is built

        return zoo.build(f"{prefix}:{where}", kwargs, num_classes)

    return ModelSource(build=build, kind="image", summary=summary, where="NAME", zoo=True)


MODEL_SOURCES.register("torchvision")(_zoo_source("torchvision", "torchvision.models.get_model(NAME, weights=None)"))
MODEL_SOURCES.register("timm")(_zoo_source("timm", "timm.create_model(NAME, pretrained=False)"))


def source_of(name: str) -> ModelSource | None:
    """The :class:`ModelSource` of a ``SOURCE:WHERE`` model name, ``None`` for built-in names and factories."""
    source, _ = split_source(name)
    return None if source is None else MODEL_SOURCES.get(source)


def data_options(model: str, data: str, options: dict | None = None) -> dict:
    """The options to load dataset ``data`` with for model ``model``: an image folder gets a zoo model's own
    preprocessing (resize, crop, mean/std; see :func:`prunekit.zoo.preprocessing`), which ``options`` override."""
    source = source_of(model)
    if data.partition(":")[0] == "imagefolder" and source is not None and source.zoo:
        from prunekit.zoo import preprocessing

        return {**preprocessing(model), **(options or {})}
    return dict(options or {})


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
        spec: ModelSource = MODEL_SOURCES.get(source)
        if not where.strip():
            raise ConfigError(f"model {name!r} names nothing after {source}: (write {source}:{spec.where})")
        if spec.check is not None:
            spec.check(where)
        return spec.kind
    if ":" in name:
        return "custom"
    MODELS.get(name)
    return "image"
