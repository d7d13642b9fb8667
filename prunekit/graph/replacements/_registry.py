"""Which stock layer each replacement stands in for; see the package docstring."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import MappingProxyType

from torch import nn

# Replacement classes by name (the name a saved spec records), and by the stock class they replace.
_BY_NAME: dict[str, type[nn.Module]] = {}
_BY_STOCK: dict[type[nn.Module], type[nn.Module]] = {}
REPLACEMENTS = MappingProxyType(_BY_NAME)  # read-only view; add entries with register_replacement


def register_replacement(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: ``cls`` (a subclass with a ``replaces`` attribute) stands in for that stock class."""
    stock = cls.replaces  # type: ignore[attr-defined]
    if cls.__name__ in _BY_NAME or stock in _BY_STOCK:
        raise ValueError(f"a replacement for {stock.__name__} is registered twice")
    _BY_NAME[cls.__name__] = cls
    _BY_STOCK[stock] = cls
    return cls


def _load_builtins() -> None:
    """Registers the built-in replacements before any lookup, whatever was imported before.

    torch's own layers always; optional libraries' layers once that library is in use (a model of
    theirs can only exist then), so the lookup never depends on the order of imports.
    """
    import prunekit.graph.replacements.attention  # noqa: F401

    if "torchvision" in sys.modules:
        import prunekit.graph.replacements.swin  # noqa: F401


def replacement_for(module: nn.Module) -> type[nn.Module] | None:
    """The replacement class for ``module`` if it is exactly a stock class that has one, else None."""
    _load_builtins()
    return _BY_STOCK.get(type(module))


def replacement_named(name: str) -> type[nn.Module] | None:
    _load_builtins()
    return _BY_NAME.get(name)


def stock_name(cls: type[nn.Module]) -> str | None:
    """The name of the stock class that ``cls`` replaces, if ``cls`` is a registered replacement."""
    _load_builtins()
    return cls.replaces.__name__ if _BY_NAME.get(cls.__name__) is cls else None  # type: ignore[attr-defined]


@contextlib.contextmanager
def traced_as_replacements(model: nn.Module) -> Iterator[None]:
    """Runs every stock module that has a replacement as that replacement, restoring the class after.

    A replacement computes what the stock layer computes, in ops whose labels show its heads.
    """
    swapped = []
    for m in model.modules():
        cls = replacement_for(m)
        if cls is not None:
            swapped.append((m, type(m)))
            m.__class__ = cls
    try:
        yield
    finally:
        for m, cls in swapped:
            m.__class__ = cls
