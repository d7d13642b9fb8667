"""Granularities: the shape of what one pruning decision removes, expressed as a mask shape.

A granularity turns element scores into *group* scores (the sum over the group: L1 scores give the
group's L1 norm, ``l2`` scores its squared L2 norm), lets a scope rank the groups, and expands the
group mask back to the weight's shape. For a conv weight W of shape (C_out, C_in, k_h, k_w):

- ``element``: single weights (unstructured, Han et al. 2015).
- ``vector``: one row of one k×k kernel, W[o, i, r, :] (Mao et al. 2017, "Exploring the regularity
  of sparse structure in CNNs": 1-D granularity).
- ``kernel``: one whole k×k kernel, W[o, i, :, :] (Mao et al. 2017: 2-D granularity).
- ``filter``: one output filter W[o] (Li et al. 2017), and the bias of that filter with it, so the
  output channel is exactly zero and can later be removed physically.
- ``nm``: N:M fine-grained sparsity (Mishra et al. 2021, "Accelerating sparse deep neural networks";
  Zhou et al. 2021): in every run of M consecutive weights along the input dimension, keep the N
  with the highest score. Its sparsity is fixed at 1 − N/M, so the scope and the target do not choose
  it; 2:4 is what sparse tensor cores accelerate.
- ``block1x8``, ``block4x4``, ``block8x8``, ``block16x16``: R×C tiles of the weight seen as a matrix
  (C_out, C_in·k_h·k_w) — the blocks of a BSR sparse matrix, so that CPU sparse kernels pay off at
  lower sparsity than for single weights (Gray et al. 2017, "GPU kernels for block-sparse weights";
  Narang et al. 2017, "Block-sparse recurrent neural networks"). Edge tiles of a matrix whose sides
  are not multiples of the block are smaller.

A Linear layer is a 1×1 convolution, so for it ``vector`` and ``kernel`` coincide with ``element``.

Example (``kernel`` on a 2×1×2×2 conv: the kernel of filter 1 has the smaller L1 norm)::

    W = [[[[3, 1], [1, 1]]], [[[0.1, 0.2], [0.3, 0.1]]]]
    group scores (l1): [[6.0], [0.7]]  → keep kernel 0, prune kernel 1 at 50%
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from prunekit.errors import ConfigError
from prunekit.registry import Registry

__all__ = ["GRANULARITIES", "BlockGranularity", "Granularity", "nm_mask", "check_nm", "nm_sparsity"]


@dataclass(frozen=True)
class Granularity:
    """One mask shape.

    Attributes:
        name: registry name.
        reduce_dims: maps a weight shape to the dims summed into one group score.
        fixed_pattern: the granularity fixes the mask pattern itself (N:M), not a scope.
        doc: one line for docs and ``--help``.
    """

    name: str
    reduce_dims: Callable[[torch.Size], tuple[int, ...]]
    fixed_pattern: bool = False
    doc: str = ""

    def group_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """Element scores → group scores (summed over each group; keeps reduced dims as size 1)."""
        dims = self.reduce_dims(scores.shape)
        return scores.sum(dim=dims, keepdim=True) if dims else scores

    def group_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A group is alive while any of its weights is."""
        dims = self.reduce_dims(mask.shape)
        return mask.amax(dim=dims, keepdim=True) if dims else mask

    @staticmethod
    def expand(group_mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return group_mask.expand(shape).clone()


GRANULARITIES: Registry = Registry("granularity")


def _register(g: Granularity) -> None:
    GRANULARITIES.register(g.name)(g)


_register(Granularity("element", lambda s: (), doc="single weights (unstructured)"))
_register(Granularity("vector", lambda s: (len(s) - 1,) if len(s) >= 3 else (),
                      doc="one row of one conv kernel, W[o, i, r, :] (Mao et al. 2017)"))
_register(Granularity("kernel", lambda s: tuple(range(2, len(s))),
                      doc="one whole conv kernel, W[o, i, :, :] (Mao et al. 2017)"))
_register(Granularity("filter", lambda s: tuple(range(1, len(s))),
                      doc="one output filter W[o] and its bias (Li et al. 2017)"))
_register(Granularity("nm", lambda s: (), fixed_pattern=True,
                      doc="N of every M consecutive input weights kept (Mishra et al. 2021)"))


@dataclass(frozen=True)
class BlockGranularity(Granularity):
    """R×C tiles of the weight as a (C_out, rest) matrix; a tile's score is the sum of its weights'."""

    block: tuple[int, int] = (1, 1)

    def _tiles(self, t: torch.Tensor) -> torch.Tensor:
        r, c = self.block
        m = t.reshape(t.shape[0], -1)
        m = torch.nn.functional.pad(m, (0, -m.shape[1] % c, 0, -m.shape[0] % r))
        return m.reshape(m.shape[0] // r, r, m.shape[1] // c, c)

    def group_scores(self, scores: torch.Tensor) -> torch.Tensor:
        return self._tiles(scores).sum(dim=(1, 3))

    def group_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return self._tiles(mask).amax(dim=(1, 3))

    def expand(self, group_mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        r, c = self.block
        rows, cols = shape[0], torch.Size(shape[1:]).numel()
        full = group_mask.repeat_interleave(r, 0).repeat_interleave(c, 1)
        return full[:rows, :cols].reshape(shape).clone()


for _r, _c in ((1, 8), (4, 4), (8, 8), (16, 16)):
    _register(BlockGranularity(f"block{_r}x{_c}", lambda s: (), block=(_r, _c),
                               doc=f"{_r}×{_c} tiles of the weight matrix (BSR blocks, Gray et al. 2017)"))


def nm_sparsity(nm: tuple[int, int]) -> float:
    """The sparsity an N:M pattern fixes: 1 − N/M."""
    n, m = nm
    return 1.0 - n / m


def check_nm(name: str, shape: torch.Size, nm: tuple[int, int]) -> None:
    """Raises a :class:`ConfigError` unless weight ``name`` of ``shape`` can carry an N:M pattern."""
    n, m = nm
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
        raise ConfigError(f"nm must be two integers N:M with 0 < N < M (e.g. [2, 4]), got {list(nm)}")
    fan_in = int(torch.Size(shape)[1:].numel())
    if len(shape) < 2 or fan_in % m:
        raise ConfigError(
            f"granularity 'nm' ({n}:{m}) needs the input size of every pruned layer to be a multiple of "
            f"M={m}, but {name!r} has input size {fan_in} (weight shape {tuple(shape)}); exclude that layer "
            f"(prune.exclude: [{name.rsplit('.', 1)[0]!r}]) or choose an M that divides {fan_in}")


def nm_mask(scores: torch.Tensor, nm: tuple[int, int]) -> torch.Tensor:
    """Keeps the N highest-scoring weights in each run of M along the flattened input dimension.

    Example:
        >>> nm_mask(torch.tensor([[1., 4., 2., 3.]]), (2, 4))
        tensor([[0., 1., 0., 1.]])
    """
    n, m = nm
    out_dim = scores.shape[0]
    runs = scores.reshape(out_dim, -1, m)
    keep = torch.topk(runs, n, dim=-1, sorted=False).indices
    mask = torch.zeros_like(runs).scatter_(-1, keep, 1.0)
    return mask.reshape(scores.shape)


def is_nm(weight: torch.Tensor, nm: tuple[int, int]) -> bool:
    """True if every run of M input weights holds at most N non-zeros."""
    n, m = nm
    runs = weight.detach().reshape(weight.shape[0], -1, m)
    return bool(((runs != 0).sum(-1) <= n).all())
