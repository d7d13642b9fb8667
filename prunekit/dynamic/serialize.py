"""Saving a dynamic model beside its static one: ``dynamic.json`` + ``dynamic.safetensors``.

The static model (maybe pruned) is saved as usual (:func:`prunekit.structured.serialize.save_pruned`:
``pruned.json`` + ``model.safetensors``); the dynamic parts go beside it:

* ``dynamic.json``: ``format`` ``prunekit.dynamic``, ``format_version``, ``method`` (a name in
  :data:`~prunekit.dynamic.base.DYNAMIC_METHODS`) and ``spec`` (data: exit points, head kinds and widths,
  thresholds; tokens merged per block; channels kept);
* ``dynamic.safetensors``: the tensors the method adds (exit heads, gate predictors).

:func:`load_dynamic` loads the static model with :func:`~prunekit.structured.serialize.load_pruned`, then asks the
registered method to rebuild its parts from the spec: nothing named in a file is imported or called.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from prunekit.dynamic.base import DYNAMIC_METHODS
from prunekit.errors import ConfigError, ModelLoadError
from prunekit.io.checkpoint import atomic_write_text, load_state_dict, save_state_dict

__all__ = ["DYNAMIC_JSON", "DYNAMIC_WEIGHTS", "load_dynamic", "save_dynamic"]

FORMAT = "prunekit.dynamic"
VERSION = 1
DYNAMIC_JSON = "dynamic.json"
DYNAMIC_WEIGHTS = "dynamic.safetensors"


def save_dynamic(model: nn.Module, path: str | Path) -> list[str]:
    """Writes ``dynamic.json`` and ``dynamic.safetensors`` for ``model`` (made by a registered method) under
    directory ``path``; returns the file names. Save the static model there too (``save_pruned``)."""
    name = getattr(model, "dynamic_method", None)
    if name not in DYNAMIC_METHODS:
        raise ConfigError(f"{type(model).__name__} is not a dynamic model of a registered method "
                          f"({', '.join(DYNAMIC_METHODS.names())})")
    spec, tensors = DYNAMIC_METHODS.get(name).state(model)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_state_dict(tensors, path / DYNAMIC_WEIGHTS, {"format": FORMAT, "format_version": VERSION})
    meta = {"format": FORMAT, "format_version": VERSION, "method": name, "spec": spec}
    atomic_write_text(path / DYNAMIC_JSON, json.dumps(meta, indent=1))
    return [DYNAMIC_JSON, DYNAMIC_WEIGHTS]


def load_dynamic(path: str | Path, static: nn.Module | None = None, **load_pruned_kwargs) -> nn.Module:
    """The dynamic model saved under ``path``: the static model (given, or loaded with ``load_pruned(path,
    **load_pruned_kwargs)``) with the method's parts rebuilt from ``dynamic.json``.

    Raises:
        ModelLoadError: a missing or foreign file, an unknown method, or parts that do not fit.
    """
    path = Path(path)
    meta_file = path / DYNAMIC_JSON
    if not meta_file.is_file():
        raise ModelLoadError(f"{meta_file} does not exist: {path} holds no dynamic model (save it with save_dynamic)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{meta_file}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelLoadError(f"{meta_file}: format is {meta.get('format') if isinstance(meta, dict) else None!r}, "
                             f"expected {FORMAT!r}")
    if meta.get("format_version") != VERSION:
        raise ModelLoadError(f"{meta_file}: format_version {meta.get('format_version')!r} is not readable; this "
                             f"prunekit reads {VERSION}")
    try:
        method = DYNAMIC_METHODS.get(meta.get("method"))
    except ConfigError as e:
        raise ModelLoadError(f"{meta_file}: {e}") from None
    if static is None:
        from prunekit.structured.serialize import load_pruned

        static = load_pruned(path, **load_pruned_kwargs)
    tensors = load_state_dict(path / DYNAMIC_WEIGHTS) if (path / DYNAMIC_WEIGHTS).is_file() else {}
    return method.restore(static, meta.get("spec") or {}, tensors)
