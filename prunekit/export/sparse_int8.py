"""A compressed sparse int8 file for a pruned model's weights (Han et al. 2016, "Deep compression", without the
weight sharing and the Huffman code: relative indices and int8 values, then a general-purpose compressor).

Every floating tensor of the state dict is stored as

- its non-zero entries, quantised to int8 with one symmetric scale per output row (dim 0) for a weight of two or
  more dimensions, ``scale_r = max_j |w_rj| / 127`` (stored as fp16), ``q = round(w / scale_r)`` (a tensor of one
  dimension, e.g. a bias, keeps fp32: it is small and quantising it moves every output);
- where they are: the gaps between the flat positions of consecutive non-zeros (the first counted from -1), each
  written as a LEB128 varint, so a gap below 128 costs one byte (at 98% sparsity the mean gap is 50);

all of it in one payload — a JSON header (format version, names, shapes, dtypes, byte ranges) and the arrays —
compressed with LZMA (xz). Loading parses JSON and numbers only; nothing in the file is executed.

A tensor whose dense int8 form is smaller than the sparse one (density above ~1/2) is stored dense (int8 or fp32).
Integer tensors (e.g. BatchNorm's ``num_batches_tracked``) are stored as they are.

Example:
    >>> info = save_sparse_int8(pruned_model, "model.sparse-int8.xz")
    >>> info["size_bytes"], info["nonzero"]          # e.g. (8300, 3993) for LeNet-300-100 at 98.5% sparsity
    >>> model.load_state_dict(load_sparse_int8("model.sparse-int8.xz"))   # weights dequantised to fp32
"""

from __future__ import annotations

import json
import lzma
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prunekit.errors import ConfigError, ModelLoadError, OutputExistsError

__all__ = ["SPARSE_INT8_VERSION", "load_sparse_int8", "save_sparse_int8", "varint_decode", "varint_encode"]

SPARSE_INT8_VERSION = 1
MAGIC = b"PKSI8"


def varint_encode(values: np.ndarray) -> np.ndarray:
    """LEB128: 7 bits per byte, low bits first, the high bit set on every byte but the last of a value."""
    v = np.asarray(values, dtype=np.uint64)
    if v.size == 0:
        return np.zeros(0, np.uint8)
    n = np.ones(v.shape, np.int64)
    rest = v >> np.uint64(7)
    while rest.any():
        n += rest > 0
        rest >>= np.uint64(7)
    out = np.empty(int(n.sum()), np.uint8)
    starts = np.cumsum(n) - n
    for k in range(int(n.max())):
        sel = n > k
        byte = (v[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (n[sel] > k + 1).astype(np.uint64) << np.uint64(7)
        out[starts[sel] + k] = (byte | more).astype(np.uint8)
    return out


def varint_decode(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`varint_encode`."""
    b = np.asarray(data, dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, np.uint64)
    ends = np.flatnonzero((b & 0x80) == 0)
    if ends.size == 0 or ends[-1] != b.size - 1:
        raise ModelLoadError("corrupt sparse int8 file: a varint runs past the end of its array")
    starts = np.concatenate(([0], ends[:-1] + 1))
    pos = np.arange(b.size) - np.repeat(starts, ends - starts + 1)
    parts = (b & 0x7F).astype(np.uint64) << (np.uint64(7) * pos.astype(np.uint64))
    return np.add.reduceat(parts, starts)


def _quantise_rows(t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    rows = t.detach().reshape(t.shape[0], -1).to(torch.float32)
    # fp16 scales (half the bytes of fp32); the values are quantised with the rounded scale they will be read with
    scale = (rows.abs().amax(dim=1) / 127.0).to(torch.float16).to(torch.float32)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(rows / safe[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(-1).numpy(), scale.numpy().astype(np.float16)


def _encode(name: str, t: torch.Tensor, blobs: list[bytes], offset: int) -> tuple[dict, int]:
    entry: dict = {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}

    def add(key: str, arr: np.ndarray) -> None:
        nonlocal offset
        raw = np.ascontiguousarray(arr).tobytes()
        entry[key] = [offset, len(raw), arr.dtype.str]
        blobs.append(raw)
        offset += len(raw)

    if not t.is_floating_point():
        entry["kind"] = "raw"
        add("data", t.detach().cpu().contiguous().numpy())
        return entry, offset
    quantise = t.dim() >= 2 and t.shape[0] > 0
    flat = t.detach().cpu().reshape(-1)
    nz = np.flatnonzero(flat.numpy() != 0)
    sparse_cost = len(nz) * 2 if quantise else len(nz) * 5
    dense_cost = flat.numel() * (1 if quantise else 4)
    if quantise:
        q, scale = _quantise_rows(t.cpu())
        add("scale", scale)
    entry["kind"] = ("int8" if quantise else "fp32") + ("_sparse" if sparse_cost < dense_cost else "_dense")
    values = q if quantise else flat.to(torch.float32).numpy()
    if entry["kind"].endswith("_sparse"):
        add("gaps", varint_encode(np.diff(nz, prepend=-1)))
        add("values", values[nz])
    else:
        add("values", values)
    return entry, offset


def save_sparse_int8(model: nn.Module | dict[str, torch.Tensor], path: str | Path, *, force: bool = False) -> dict:
    """Writes the model's state dict (masks folded in first by the caller) to ``path`` in the compressed sparse
    int8 format; returns ``{"path", "size_bytes", "nonzero", "tensors", "version"}``.

    The file is written under a temporary name beside ``path`` and renamed when complete.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{str(path)!r} exists; choose another path or pass force=True to replace it")
    state = model.state_dict() if isinstance(model, nn.Module) else model
    masks = [k for k in state if k.endswith("_mask")]
    if masks:
        raise ConfigError(f"the state dict holds mask buffers ({masks[0]!r}, ...): fold the masks in first "
                          "(prunekit.export.onnx_export.plain_copy)")
    blobs: list[bytes] = []
    entries, offset = [], 0
    for name, t in state.items():
        entry, offset = _encode(name, t, blobs, offset)
        entries.append(entry)
    header = json.dumps({"format": "prunekit-sparse-int8", "version": SPARSE_INT8_VERSION, "tensors": entries},
                        separators=(",", ":")).encode()
    payload = struct.pack("<I", len(header)) + header + b"".join(blobs)
    data = MAGIC + lzma.compress(payload, preset=9 | lzma.PRESET_EXTREME)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    nonzero = sum(int(t.count_nonzero()) for t in state.values() if t.is_floating_point())
    return {"path": str(path), "size_bytes": len(data), "nonzero": nonzero, "tensors": len(entries),
            "version": SPARSE_INT8_VERSION}


def _array(payload: bytes, base: int, spec: list) -> np.ndarray:
    start, length, dtype = spec
    if start < 0 or base + start + length > len(payload):
        raise ModelLoadError("corrupt sparse int8 file: an array lies outside the payload")
    return np.frombuffer(payload, dtype=np.dtype(dtype), count=length // np.dtype(dtype).itemsize,
                         offset=base + start)


def _decode(e: dict, payload: bytes, base: int) -> torch.Tensor:
    shape = [int(s) for s in e["shape"]]
    dtype = getattr(torch, e["dtype"], None)
    if not isinstance(dtype, torch.dtype):
        raise ModelLoadError(f"corrupt sparse int8 file: unknown dtype {e['dtype']!r} of {e['name']!r}")
    if e["kind"] == "raw":
        return torch.from_numpy(_array(payload, base, e["data"]).copy()).reshape(shape).to(dtype)
    n = int(np.prod(shape)) if shape else 1
    values = _array(payload, base, e["values"]).astype(np.float32)
    flat = np.zeros(n, np.float32)
    if e["kind"].endswith("_sparse"):
        pos = np.cumsum(varint_decode(_array(payload, base, e["gaps"])).astype(np.int64)) - 1
        if len(pos) != len(values) or (len(pos) and (pos[0] < 0 or pos[-1] >= n)):
            raise ModelLoadError(f"corrupt sparse int8 file: positions of {e['name']!r} do not fit its shape {shape}")
        flat[pos] = values
    else:
        if len(values) != n:
            raise ModelLoadError(f"corrupt sparse int8 file: {e['name']!r} holds {len(values)} values for shape "
                                 f"{shape}")
        flat[:] = values
    if e["kind"].startswith("int8"):
        scale = _array(payload, base, e["scale"])
        flat = (flat.reshape(len(scale), -1) * scale.astype(np.float32)[:, None]).reshape(-1)
    return torch.from_numpy(flat).reshape(shape).to(dtype)


def load_sparse_int8(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict stored in a sparse int8 file, int8 weights dequantised (``q · scale``) to their dtype.

    Raises:
        ModelLoadError: not such a file, an unknown version, or a corrupt one.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"no sparse int8 file at {str(path)!r}")
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise ModelLoadError(f"{str(path)!r} is not a prunekit sparse int8 file (written by save_sparse_int8)")
    try:
        payload = lzma.decompress(data[len(MAGIC):])
        (hlen,) = struct.unpack_from("<I", payload)
        header = json.loads(payload[4:4 + hlen])
    except (lzma.LZMAError, struct.error, ValueError) as e:
        raise ModelLoadError(f"{str(path)!r}: corrupt sparse int8 file ({e})") from None
    if header.get("version") != SPARSE_INT8_VERSION:
        raise ModelLoadError(f"{str(path)!r} is sparse int8 format version {header.get('version')!r}; this prunekit "
                             f"reads version {SPARSE_INT8_VERSION}")
    return {e["name"]: _decode(e, payload, 4 + hlen) for e in header["tensors"]}
