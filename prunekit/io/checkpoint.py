"""Safe reading and atomic writing of weights.

Weights load through safetensors or ``torch.load(weights_only=True)`` — never by unpickling
arbitrary objects. Every file is written to a temporary name in the target directory and renamed
into place, so a crash never leaves a half-written file and an existing file is replaced whole.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from prunekit.errors import ModelLoadError

__all__ = ["atomic_write_bytes", "atomic_write_text", "load_state_dict", "save_state_dict",
           "load_weights_into"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike,
                    metadata: dict | None = None) -> None:
    """Saves tensors as safetensors (atomically); ``metadata`` is stored as JSON in the header.

    The same tensors and metadata give the same bytes: the header is written with sorted keys (safetensors
    keeps its metadata in a hash map, whose order changes from process to process)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    raw = safetensors_bytes(tensors, metadata={"prunekit": json.dumps(metadata or {}, sort_keys=True)})
    atomic_write_bytes(path, canonical_safetensors(raw))


def canonical_safetensors(raw: bytes) -> bytes:
    """``raw`` (a safetensors file) with its JSON header's keys sorted; the tensor data is unchanged (offsets
    count from the data's start, so the header may change length). Padded with spaces to 8 bytes, as the
    format asks."""
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a state dict from ``.safetensors`` or a torch file, without unpickling objects.

    A torch file may hold the state dict itself or a dict with a ``state_dict``/``model`` entry.

    Raises:
        ModelLoadError: the file is missing, corrupt, or holds something other than tensors.
    """
    p = Path(path)
    if p.is_dir():
        raise ModelLoadError(f"checkpoint {str(p)!r} is a directory; give the .safetensors or torch file inside it "
                             "(a prunekit run directory loads with prunekit.load_pruned)")
    if not p.is_file():
        raise ModelLoadError(f"checkpoint {str(p)!r} does not exist")
    try:
        if p.suffix == ".safetensors":
            return load_file(str(p))
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelLoadError(
            f"cannot load checkpoint {str(p)!r} safely ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "save it as .safetensors or as a plain state_dict with torch.save"
        ) from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"checkpoint {str(p)!r} does not hold a state dict of tensors")
    return obj


def load_weights_into(model: nn.Module, path: str | os.PathLike,
                      exclude: tuple[str, ...] | list[str] = ()) -> nn.Module:
    """Loads the checkpoint at ``path`` into ``model`` strictly: every key must match in name, shape and kind.

    Args:
        exclude: key patterns (fnmatch, e.g. ``"fc.*"``) left out on both sides: those tensors keep the
            model's own initialisation — the way to load a fine-tuned backbone whose head has another size.

    Raises:
        ModelLoadError: naming the first mismatching keys (and the ``exclude`` that would skip them), integer
            weights where the model holds floats, or NaN/inf weights.
    """
    state = _strip_wrapper_prefix(load_state_dict(path), model)
    skip = lambda k: any(fnmatch.fnmatchcase(k, pat) for pat in exclude)  # noqa: E731
    own = {k: v for k, v in model.state_dict().items() if not skip(k)}
    state = {k: v for k, v in state.items() if not skip(k)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        detail = "; ".join(
            f"{what}: {', '.join(_with_shapes(keys, own, state) if what == 'wrong shape' else keys[:5])}"
            f"{' …' if len(keys) > 5 else ''}"
            for what, keys in (("wrong shape", bad_shape), ("missing", missing), ("unexpected", unexpected)) if keys
        )
        heads = sorted({k.rsplit(".", 1)[0] + ".*" for k in bad_shape + missing + unexpected if "." in k})
        hint = (f"; if only the head differs (another number of classes), exclude it: {heads[:4]} (recipe: "
                "model.checkpoint_exclude) and it keeps its fresh initialisation") if 0 < len(heads) <= 4 else ""
        raise ModelLoadError(f"checkpoint {str(path)!r} does not fit the model ({detail}){hint}")
    for k, t in state.items():
        if own[k].is_floating_point() and not (t.is_floating_point()):
            raise ModelLoadError(f"checkpoint {str(path)!r}: {k!r} is {t.dtype}, but the model holds "
                                 f"{own[k].dtype} weights there; save the floating-point state dict")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelLoadError(f"checkpoint {str(path)!r}: {k!r} holds NaN or infinite values (a diverged "
                                 "training?); use a checkpoint with finite weights")
    model.load_state_dict(state, strict=not exclude)
    return model


def _with_shapes(keys: list[str], own: dict, state: dict) -> list[str]:
    return [f"{k} {list(state[k].shape)} in the file vs {list(own[k].shape)} in the model" for k in keys[:5]]


def _strip_wrapper_prefix(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict saved from ``nn.DataParallel``/DDP (every key starts with ``module.``) loads into the bare model."""
    if state and all(k.startswith("module.") for k in state) and \
            not any(k.startswith("module.") for k in model.state_dict()):
        return {k[len("module."):]: v for k, v in state.items()}
    return state
