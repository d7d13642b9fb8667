"""Size on disk, dense and compressed.

``dense`` is the size of the state dict saved as safetensors. ``compressed`` stores each tensor as
its non-zero values plus a bit mask of where they are (one bit per entry), deflate-compressed in a
zip archive — the simple sparse format of :func:`prunekit.io.save_sparse`. A dense tensor costs about
its dense size plus 1/32 for the mask; a 90%-sparse one about a seventh of it.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import torch
from safetensors.torch import save as st_save
from torch import nn

__all__ = ["SizeOnDisk", "size_on_disk", "sparse_encode", "sparse_decode", "dense_bytes"]


@dataclass(frozen=True)
class SizeOnDisk:
    dense_bytes: int
    compressed_bytes: int


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def dense_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """The safetensors serialisation of ``tensors`` (shared storage is cloned first)."""
    return st_save({k: v.clone() for k, v in tensors.items()})


def sparse_encode(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Splits each floating tensor into ``<name>::values`` and a packed ``<name>::bits`` mask.

    Non-floating tensors (e.g. BN's ``num_batches_tracked``) are stored as they are.
    """
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if not t.is_floating_point():
            out[name] = t
            continue
        flat = t.reshape(-1)
        nz = flat != 0
        out[f"{name}::values"] = flat[nz].clone()
        out[f"{name}::shape"] = torch.tensor(list(t.shape) or [1], dtype=torch.int64)
        bits = torch.zeros((flat.numel() + 7) // 8 * 8, dtype=torch.uint8)
        bits[: flat.numel()] = nz.to(torch.uint8)
        weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
        out[f"{name}::bits"] = (bits.view(-1, 8) * weights).sum(1).to(torch.uint8)
        if t.dim() == 0:
            out[f"{name}::scalar"] = torch.ones(1, dtype=torch.uint8)
    return out


def sparse_decode(encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`sparse_encode`."""
    out: dict[str, torch.Tensor] = {}
    for key, t in encoded.items():
        if "::" not in key:
            out[key] = t
            continue
        name, part = key.rsplit("::", 1)
        if part != "values":
            continue
        shape = [int(s) for s in encoded[f"{name}::shape"]]
        n = 1
        for s in shape:
            n *= s
        packed = encoded[f"{name}::bits"]
        unpacked = ((packed.unsqueeze(1) >> torch.arange(7, -1, -1)) & 1).reshape(-1)[:n].bool()
        flat = torch.zeros(n, dtype=t.dtype)
        flat[unpacked] = t
        out[name] = flat.reshape([] if f"{name}::scalar" in encoded else shape)
    return out


def zip_bytes(payload: bytes, member: str = "model.safetensors") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr(member, payload)
    return buf.getvalue()


def size_on_disk(model: nn.Module) -> SizeOnDisk:
    """Bytes of the model's state dict as dense safetensors and in the compressed sparse format."""
    state = _state(model)
    dense = len(dense_bytes(state))
    compressed = len(zip_bytes(dense_bytes(sparse_encode(state))))
    return SizeOnDisk(dense_bytes=dense, compressed_bytes=compressed)
