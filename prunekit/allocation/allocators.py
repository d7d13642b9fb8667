"""The allocation strategies by name (:data:`ALLOCATORS`), built here once from the modules that define
them; nothing else adds to the registry."""

from __future__ import annotations

from collections.abc import Callable

from prunekit.allocation.search import evolutionary_search
from prunekit.allocation.strategies import Counts, Problem, global_ranking, sensitivity, uniform
from prunekit.registry import Registry

__all__ = ["ALLOCATORS"]

ALLOCATORS: Registry[Callable[[Problem], Counts]] = Registry("allocation strategy")
for _name, _fn in (("uniform", uniform), ("global", global_ranking), ("sensitivity", sensitivity),
                   ("search", evolutionary_search)):
    ALLOCATORS.register(_name)(_fn)
