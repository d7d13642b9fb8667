"""Example inputs for any model: shapes and dtypes given by the user, a function that builds them, or the
defaults the zoo infers from a model's family; and a one-line description of what a model was given.

A forward's inputs are a tensor, a tuple (positional), a dict (keyword) or :class:`prunekit.graph.Inputs`
(both). From the command line (``prunekit check``)::

    --input-shape 1,3,16,112,112                     # one 5-D clip (a video model)
    --input-shape 1,3,128,128 --input-shape 1,3,128,128   # two positional images (RAFT's image1, image2)
    --input-shape input_ids=1,16 --input-dtype int64  # a keyword input
    --inputs mypkg.data:example_inputs                # a function returning them

Integer inputs (token ids, class indices) are drawn in ``[0, high)`` where ``high`` is the smallest
``nn.Embedding`` of the model (so every id is in range), else ``[0, 2)`` (masks, flags).

Example:
    >>> spec = InputSpec.parse(["1,3,16,112,112"])
    >>> spec.build(model)  # (tensor of shape (1, 3, 16, 112, 112),)
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, ModelLoadError
from prunekit.graph import Inputs, iter_tensors, split_inputs

__all__ = ["DTYPES", "InputSpec", "call_inputs_fn", "describe_inputs", "perturbed"]

#: dtype names accepted by ``--input-dtype``.
DTYPES = {"float32": torch.float32, "float": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16, "int64": torch.int64, "long": torch.int64, "int32": torch.int32,
          "bool": torch.bool}
_MAX_ELEMENTS = 2**31  # one example input larger than this is a typo, not a model


def _shape(text: str, what: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a shape; write sizes separated by commas, e.g. 1,3,224,224")\
            from None
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"{what} {text!r}: every size must be ≥ 1, e.g. 1,3,224,224")
    n = 1
    for d in dims:
        n *= d
    if n > _MAX_ELEMENTS:
        raise ConfigError(f"{what} {text!r} has {n:,} elements; at most {_MAX_ELEMENTS:,}")
    return dims


def _dtype(text: str) -> torch.dtype:
    if text not in DTYPES:
        raise ConfigError(f"--input-dtype {text!r} is not one of: {', '.join(DTYPES)}")
    return DTYPES[text]


@dataclass(frozen=True)
class InputSpec:
    """Tensor inputs by shape: positional ``shapes`` and keyword ``keywords`` (name -> shape), with ``dtypes``
    (one for all, or one per input in the order given; ``NAME=DTYPE`` for a keyword input)."""

    shapes: tuple[tuple[int, ...], ...] = ()
    keywords: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, shapes: list[str] | None, dtypes: list[str] | None = None) -> InputSpec:
        """From ``--input-shape`` values (``1,3,224,224`` or ``NAME=1,16``) and ``--input-dtype`` values."""
        pos, kw = [], {}
        for text in shapes or []:
            name, sep, rest = text.partition("=")
            if sep:
                if not name.isidentifier():
                    raise ConfigError(f"--input-shape {text!r}: {name!r} is not a keyword argument name")
                kw[name] = _shape(rest, "--input-shape")
            else:
                pos.append(_shape(text, "--input-shape"))
        spec = cls(tuple(pos), kw, tuple(dtypes or ()))
        spec._dtypes()  # validate now
        return spec

    def _dtypes(self) -> tuple[list[torch.dtype], dict[str, torch.dtype]]:
        n = len(self.shapes) + len(self.keywords)
        named = {}
        plain = []
        for text in self.dtypes:
            name, sep, rest = text.partition("=")
            if sep:
                if name not in self.keywords:
                    raise ConfigError(f"--input-dtype {text!r} names no keyword input; keyword inputs: "
                                      f"{', '.join(self.keywords) or 'none'}")
                named[name] = _dtype(rest)
            else:
                plain.append(_dtype(text))
        if len(plain) > 1 and len(plain) != n:
            raise ConfigError(f"--input-dtype given {len(plain)} times for {n} inputs: give one dtype for all, or one "
                              "per input in the order of --input-shape")
        each = plain if len(plain) == n and n > 1 else plain * n if plain else [torch.float32] * n
        pos = each[:len(self.shapes)]
        kw = {k: named.get(k, each[len(self.shapes) + i]) for i, k in enumerate(self.keywords)}
        return pos, kw

    @property
    def empty(self) -> bool:
        return not self.shapes and not self.keywords

    def build(self, model: nn.Module | None = None, seed: int = 0) -> Any:
        """Seeded random tensors of these shapes (a tuple, a dict, or :class:`Inputs` for both)."""
        g = torch.Generator().manual_seed(seed)
        high = integer_range(model)
        pos_dt, kw_dt = self._dtypes()
        args = tuple(_random(s, d, high, g) for s, d in zip(self.shapes, pos_dt, strict=True))
        kwargs = {k: _random(s, kw_dt[k], high, g) for k, s in self.keywords.items()}
        if kwargs and args:
            return Inputs(*args, **kwargs)
        return kwargs or args


def integer_range(model: nn.Module | None) -> int:
    """Integer inputs are drawn below this: the smallest embedding table of ``model``, else 2."""
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)] if model is not None else []
    return min(sizes) if sizes else 2


def _random(shape: tuple[int, ...], dtype: torch.dtype, high: int, g: torch.Generator) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(0, high, shape, generator=g, dtype=dtype)


def call_inputs_fn(spec: str, model: nn.Module) -> Any:
    """``--inputs package.module:fn``: calls ``fn()`` (or ``fn(model)`` if it takes an argument); it returns a
    tensor, a tuple of positional inputs, a dict of keyword inputs, ``(args, kwargs)`` or :class:`Inputs`."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--inputs {spec!r}: expected package.module:function")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"--inputs {spec!r}: cannot import {attr!r} from {module_name!r} ({e})") from None
    if not callable(fn):
        raise ConfigError(f"--inputs {spec!r}: {attr!r} is not a function")
    try:
        takes_model = bool(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        takes_model = False
    try:
        out = fn(model) if takes_model else fn()
    except Exception as e:
        raise ModelLoadError(f"--inputs {spec!r}: the function raised {type(e).__name__}: {e}") from e
    if (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], (tuple, list))
            and isinstance(out[1], dict)):
        out = Inputs(*out[0], **out[1])
    try:
        split_inputs(out)
    except ConfigError as e:
        raise ConfigError(f"--inputs {spec!r} returned {type(out).__name__}: {e}") from None
    if not any(True for _ in iter_tensors(out)):
        raise ConfigError(f"--inputs {spec!r} returned no tensor")
    return out


def describe_inputs(example_inputs: Any) -> str:
    """``x0: [1, 3, 16, 112, 112] float32; pixel_values: [...]`` — what a model is run on, in one line."""
    args, kwargs = split_inputs(example_inputs)

    def one(v: Any) -> str:
        if isinstance(v, torch.Tensor):
            return f"{list(v.shape)} {str(v.dtype).removeprefix('torch.')}"
        if isinstance(v, (list, tuple)):
            inner = [one(x) for x in v]
            same = len(set(inner)) == 1
            return f"list of {len(v)} × {inner[0]}" if same and inner else f"[{', '.join(inner)}]"
        return type(v).__name__

    parts = [f"arg{i}: {one(v)}" for i, v in enumerate(args)] + [f"{k}: {one(v)}" for k, v in kwargs.items()]
    return "; ".join(parts) or "none"


def perturbed(example_inputs: Any, seed: int = 1) -> Any:
    """Inputs of the same structure with other values: floats negated (so a test like ``x.sum() > 0`` flips),
    integers redrawn in the same range — for detecting control flow that depends on input values."""
    g = torch.Generator().manual_seed(seed)

    def other(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            if v.is_floating_point():
                return -v
            if v.dtype == torch.bool or v.numel() == 0:
                return v
            lo, hi = int(v.min()), int(v.max()) + 1
            return torch.randint(lo, max(hi, lo + 1), v.shape, generator=g, dtype=v.dtype)
        if isinstance(v, list):
            return [other(x) for x in v]
        if isinstance(v, tuple):
            return tuple(other(x) for x in v)
        if isinstance(v, dict):
            return {k: other(x) for k, x in v.items()}
        return v

    if isinstance(example_inputs, Inputs):
        return Inputs(*other(example_inputs.args), **other(example_inputs.kwargs))
    return other(example_inputs)
