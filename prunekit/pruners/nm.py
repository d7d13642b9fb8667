"""Exporting N:M-sparse weights: a compressed form, and PyTorch's semi-structured 2:4 tensors.

The compressed form keeps, for each run of M input weights, the N kept values and their positions
in the run (uint8): a W of shape (C_out, K) becomes values (C_out, K·N/M) and indices of the same
shape, i.e. N/M of the values plus ⌈log₂M⌉ bits each — what sparse tensor cores consume (Mishra et
al. 2021).

``to_semi_structured`` swaps the weights of 2:4 Linear layers for
``torch.sparse.to_sparse_semi_structured`` tensors (CUDA, fp16/bf16, compute capability ≥ 8.0), so
``F.linear`` runs on the sparse kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.errors import ConfigError, PruningError
from prunekit.pruners.granularity import is_nm

__all__ = ["pack_nm", "unpack_nm", "to_semi_structured"]


def pack_nm(weight: torch.Tensor, nm: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Compresses an N:M-sparse ``weight`` to ``(values, indices)``, each (C_out, K·N/M).

    Raises:
        ConfigError: ``weight`` does not follow the N:M pattern.
    """
    n, m = nm
    w = weight.detach()
    if w.reshape(w.shape[0], -1).shape[1] % m or not is_nm(w, nm):
        raise ConfigError(f"weight of shape {tuple(w.shape)} is not {n}:{m} sparse; prune it with "
                          f"granularity 'nm' and nm=[{n}, {m}] first")
    runs = w.reshape(w.shape[0], -1, m)
    # the N largest |w| of each run; runs with fewer than N non-zeros store explicit zeros
    idx = torch.topk(runs.abs(), n, dim=-1, sorted=False).indices.sort(dim=-1).values
    values = torch.gather(runs, -1, idx)
    return values.reshape(w.shape[0], -1), idx.reshape(w.shape[0], -1).to(torch.uint8)


def unpack_nm(values: torch.Tensor, indices: torch.Tensor, nm: tuple[int, int], shape) -> torch.Tensor:
    """The dense weight of shape ``shape`` from :func:`pack_nm`'s output."""
    n, m = nm
    out = torch.zeros(shape[0], values.shape[1] // n, m, dtype=values.dtype, device=values.device)
    out.scatter_(-1, indices.long().reshape(shape[0], -1, n), values.reshape(shape[0], -1, n))
    return out.reshape(shape)


def to_semi_structured(model: nn.Module) -> list[str]:
    """Replaces the weight of every 2:4-sparse Linear layer with a semi-structured sparse tensor.

    The model must be on a CUDA device in float16/bfloat16 with masks made permanent.

    Returns:
        The names of the converted layers.
    """
    from torch.sparse import to_sparse_semi_structured

    converted = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.weight.is_cuda and is_nm(module.weight, (2, 4)) \
                and module.weight.shape[1] % 64 == 0 and module.weight.shape[0] % 32 == 0:
            module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()),
                                         requires_grad=False)
            converted.append(name)
    if not converted:
        raise PruningError("no Linear layer could be converted: semi-structured sparsity needs CUDA, "
                           "2:4-sparse weights and shapes that are multiples of 64 (in) and 32 (out)")
    return converted
