"""Walking nested outputs and naming ops: shared by the recorder and the shape-only forward."""

from __future__ import annotations

from typing import Any

import torch

# Values that never hold a tensor: iteration stops at them.
LEAVES = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.Size)


def iter_tensors(values: Any):
    """Yields every tensor inside nested tuples, lists, dicts and dataclass-like outputs.

    ``iter_tensors({"a": x, "b": (y, 1)})`` yields ``x`` then ``y``.
    """
    if isinstance(values, torch.Tensor):
        yield values
    elif isinstance(values, (list, tuple)):
        for v in values:  # tensors and scalars inline: this runs for every op of a recorded forward
            if isinstance(v, torch.Tensor):
                yield v
            elif not isinstance(v, LEAVES):
                yield from iter_tensors(v)
    elif isinstance(values, dict):
        yield from iter_tensors(tuple(values.values()))
    elif not isinstance(values, LEAVES) and hasattr(values, "to_tuple"):  # transformers ModelOutput
        yield from iter_tensors(values.to_tuple())


def op_name(func: Any) -> str:
    """``torch.Tensor.__add__`` -> ``add``, ``relu_`` -> ``relu``, ``Tensor.T.__get__`` -> ``get.T``."""
    name = getattr(func, "__name__", str(func))
    if name == "__get__":
        return "get." + getattr(getattr(func, "__self__", None), "__name__", "?")
    if name.startswith("__r") and name.endswith("__") and name not in ("__rshift__", "__repr__"):
        return "r" + name[3:-2]
    return name.strip("_")
