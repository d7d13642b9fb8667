"""Builds typed, frozen dataclasses from plain dicts (parsed YAML), with errors in the user's words.

Every error names the key's full path, the bad value, and what is allowed, e.g.
``recipe.prune: unknown allocation 'globl'; choose one of: global, ratios, threshold, uniform``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

from prunekit.errors import ConfigError, RecipeError

__all__ = ["from_dict", "to_dict"]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        others = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is not None and len(others) == 1:  # X | None given an X: the X's own error is the clearer one
            return _coerce(value, others[0], path)
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, path)
            except RecipeError as e:
                errors.append(e)
        raise RecipeError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise RecipeError(f"{path}: expected null, got {value!r}")
    if hasattr(tp, "from_raw"):  # a section whose schema depends on its content (e.g. prune.method)
        return tp.from_raw(value, path)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{path}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{path}: expected a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp) or (Any, Any)
        return {str(k): _coerce(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise RecipeError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is float and isinstance(value, str):  # YAML reads 1e-4 as a string
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number):
            return number
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise RecipeError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: Any, path: str = "recipe") -> Any:
    """Builds dataclass ``cls`` from ``data``, checking keys and types recursively.

    Raises:
        RecipeError: unknown key, missing required key, wrong type, or a value the dataclass's own
            validation rejects — naming the key's path.
    """
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecipeError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"valid keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{path}: missing required key {name!r}")
    try:
        return cls(**kwargs)
    except RecipeError:
        raise
    except ConfigError as e:
        raise RecipeError(f"{path}: {e}") from None


def to_dict(obj: Any) -> Any:
    """The plain-data form of a (nested) dataclass, ready for YAML/JSON."""
    if hasattr(obj, "to_raw"):
        return obj.to_raw()
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
