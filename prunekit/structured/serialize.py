"""Saving and loading pruned models without pickles.

A pruned model is saved as a directory:

* ``spec.json`` -- a versioned description of the new architecture: the shape of every parameter
  and buffer, which names share one tensor (tied weights), and the integer/tuple attributes of every
  module (``out_channels``, ``groups``, ``num_heads``...), plus an optional constructor string. A
  module that pruning switched to a replacement layer (:mod:`prunekit.structured.layers`) records
  the stock type it replaces, so loading switches the freshly built module the same way.
* ``weights.safetensors`` -- the weights (shared tensors stored once).

To load, build the *original* model (same constructor, no weights needed), then
:func:`load_pruned` resizes it from the spec and loads the weights. ``torch.save(model)`` of the
whole model also works, and :func:`hf_config_for` gives a transformers config describing a
uniformly pruned model so ``save_pretrained``/``from_pretrained`` round-trip.

Example:
    >>> save_pruned(model, "out/resnet18-pruned", constructor="torchvision:resnet18")
    >>> model2 = load_pruned("out/resnet18-pruned")          # or load_pruned(path, fresh_model)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, ModelLoadError, PruningError
from prunekit.structured.layers import replacement_named, stock_name

FORMAT = "prunekit.pruned-architecture"
VERSION = 2  # 2: modules may record "replaces" (a replacement layer); version 1 files still load
READABLE = (1, 2)
__all__ = ["FORMAT", "VERSION", "hf_config_for", "load_pruned", "save_pretrained_pruned", "save_pruned"]


def _attrs(module: nn.Module) -> dict[str, Any]:
    out = {}
    for k, v in vars(module).items():
        if k.startswith("_") or isinstance(v, bool):
            continue
        if isinstance(v, int) or (isinstance(v, tuple) and all(isinstance(i, int) for i in v)):
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _module_entry(module: nn.Module) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": type(module).__name__, "attrs": _attrs(module)}
    stock = stock_name(type(module))
    if stock is not None:
        entry["replaces"] = stock
    return entry


def architecture_spec(model: nn.Module, constructor: str | None = None) -> dict[str, Any]:
    """The JSON-serialisable spec of ``model``'s (pruned) architecture."""
    tensors: dict[str, list[int]] = {}
    aliases: dict[str, str] = {}
    first: dict[int, str] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for attr, t in list(module._parameters.items()) + list(module._buffers.items()):
            if t is None:
                continue
            name = f"{prefix}.{attr}" if prefix else attr
            if id(t) in first and first[id(t)] != name:
                aliases[name] = first[id(t)]
            else:
                first[id(t)] = name
                tensors[name] = list(t.shape)
    modules = {n or "": _module_entry(m) for n, m in model.named_modules()}
    return {"format": FORMAT, "version": VERSION, "constructor": constructor, "tensors": tensors,
            "aliases": aliases, "modules": modules}


def save_pruned(model: nn.Module, path: str | Path, constructor: str | None = None) -> Path:
    """Writes ``spec.json`` and ``weights.safetensors`` under directory ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    spec = architecture_spec(model, constructor)
    state = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for attr, t in list(module._parameters.items()) + list(module._buffers.items()):
            name = f"{prefix}.{attr}" if prefix else attr
            if t is not None and name in spec["tensors"]:
                state[name] = t.detach().contiguous().cpu()
    (path / "spec.json").write_text(json.dumps(spec, indent=1))
    save_file(state, str(path / "weights.safetensors"), metadata={"format": FORMAT, "version": str(VERSION)})
    return path


def load_pruned(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Resizes ``model`` (the original architecture) from the spec at ``path`` and loads the weights.

    Without ``model``, the spec's constructor string (e.g. ``torchvision:resnet18``) builds it.

    Raises:
        ModelLoadError: missing files, an unknown format version, or a model that does not match.
    """
    from safetensors.torch import load_file

    path = Path(path)
    try:
        spec = json.loads((path / "spec.json").read_text())
    except FileNotFoundError as e:
        raise ModelLoadError(f"{path} has no spec.json; save it with prunekit's save_pruned") from e
    if spec.get("format") != FORMAT or spec.get("version") not in READABLE:
        raise ModelLoadError(f"{path}/spec.json is {spec.get('format')} v{spec.get('version')}; this prunekit "
                             f"reads {FORMAT} v{', v'.join(map(str, READABLE))}")
    if model is None:
        if not spec.get("constructor"):
            raise ConfigError(f"{path} records no constructor; pass the original model: load_pruned(path, model)")
        from prunekit.zoo import load

        model = load(spec["constructor"]).model
    _resize(model, spec, path)
    state = load_file(str(path / "weights.safetensors"))
    for name, target in spec["aliases"].items():
        state[name] = state[target]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if m in spec["tensors"]]
    if missing or unexpected:
        raise ModelLoadError(f"weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def _resize(model: nn.Module, spec: dict, path: Path) -> None:
    modules = dict(model.named_modules())
    new: dict[str, torch.Tensor] = {}
    for mname, entry in spec["modules"].items():
        module = modules.get(mname)
        if module is not None and entry.get("replaces") == type(module).__name__ and replacement_named(entry["type"]):
            module.__class__ = replacement_named(entry["type"])
        if module is None or type(module).__name__ != entry["type"]:
            raise ModelLoadError(f"{path}: module {mname!r} ({entry['type']}) is not in the model given; build the "
                                 f"same original architecture the pruned model came from")
        for k, v in entry["attrs"].items():
            setattr(module, k, tuple(v) if isinstance(v, list) else v)
    for prefix, module in model.named_modules(remove_duplicate=False):
        for store in (module._parameters, module._buffers):
            for attr, t in list(store.items()):
                name = f"{prefix}.{attr}" if prefix else attr
                key = spec["aliases"].get(name, name)
                if t is None or key not in spec["tensors"]:
                    continue
                if key not in new:
                    shape = spec["tensors"][key]
                    data = torch.empty(shape, dtype=t.dtype, device=t.device)
                    if isinstance(t, nn.Parameter):
                        data = nn.Parameter(data, requires_grad=t.requires_grad)
                    new[key] = data
                store[attr] = new[key]


_FFN_FIELDS = ("intermediate_size", "n_inner", "d_ff", "ffn_dim", "encoder_ffn_dim")
_FFN_SUFFIXES = ("mlp.gate_proj", "mlp.up_proj", "intermediate.dense", "mlp.fc1", "DenseReluDense.wi", "mlp.c_fc")


def hf_config_for(model: nn.Module) -> Any:
    """A copy of a transformers model's config that describes its pruned shape.

    Covers uniform pruning of MLP width and (for configs with an explicit ``head_dim``) of query and
    key/value heads. The config is checked by building a model from it on the meta device and
    comparing every parameter shape.

    Raises:
        PruningError: the config cannot express this shape (e.g. layers pruned differently).
    """
    config = copy.deepcopy(model.config)
    widths, q_heads, kv_heads = set(), set(), set()
    head_dim = getattr(config, "head_dim", None)
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if w is None or w.ndim != 2:
            continue
        out = w.shape[1] if type(m).__name__ == "Conv1D" else w.shape[0]
        if name.endswith(_FFN_SUFFIXES):
            widths.add(out)
        if isinstance(head_dim, int) and name.endswith("self_attn.q_proj"):
            q_heads.add(out // head_dim)
        if isinstance(head_dim, int) and name.endswith("self_attn.k_proj"):
            kv_heads.add(out // head_dim)
    for values, fields in ((widths, _FFN_FIELDS), (q_heads, ("num_attention_heads",)),
                           (kv_heads, ("num_key_value_heads",))):
        if len(values) == 1:
            for f in fields:
                if isinstance(getattr(config, f, None), int):
                    setattr(config, f, next(iter(values)))
    _check_config(model, config)
    return config


def _check_config(model: nn.Module, config: Any) -> None:
    with torch.device("meta"):
        probe = type(model)(config)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    bad = [k for k in want if got.get(k) != want[k]]
    if bad:
        raise PruningError(f"the model's config cannot express its pruned shape ({bad[0]}: {want[bad[0]]} vs "
                           f"{got.get(bad[0])}); layers were pruned unevenly or a size the config derives changed. "
                           f"Use save_pruned instead")


def save_pretrained_pruned(model: nn.Module, path: str | Path) -> None:
    """``save_pretrained`` with the config rewritten by :func:`hf_config_for`."""
    model.config = hf_config_for(model)
    model.save_pretrained(str(path))
