"""The one saved-model format: ``pruned.json`` + ``model.safetensors``, and the one loader.

A pruned model — masked (weights zeroed, shapes kept) or physically smaller (channels, heads removed) — is
saved as a directory:

* ``pruned.json``: ``format``/``format_version``; ``model``: how to build the *original* architecture, as a
  registered name only (a built-in model of :data:`prunekit.models.MODELS` with its ``input_shape`` and
  ``num_classes``, or a zoo name ``torchvision:NAME``, ``timm:NAME``, ``hf:MODEL_TYPE``) with ``kwargs``;
  ``architecture``: the shape of every parameter and buffer, which names share one tensor (tied weights) and
  the integer attributes of every module (``out_channels``, ``num_heads``…; a module switched to a replacement
  layer records the stock type it replaces); ``masks``: the sparsity of every masked weight (masks are folded
  into the weights); ``info``: free-form data (e.g. the run's sparsity).
* ``model.safetensors``: the weights (shared tensors stored once).

:func:`load_pruned` builds the original model from data only, resizes it to the recorded architecture and loads
the weights. It never imports or calls a name read from a file: a model saved from ``package.module:factory``
loads only when the caller passes the model (``model=``), its constructor (``constructor=``) or opts in with
``trust_code=True``. Every failure is a :class:`~prunekit.errors.ModelLoadError` naming the file and field.

Example:
    >>> save_pruned(model, "out/resnet18-pruned", constructor="torchvision:resnet18")
    >>> model2 = load_pruned("out/resnet18-pruned")            # or load_pruned(path, model=fresh_original)
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ModelLoadError, PruningError
from prunekit.structured.layers import replacement_named, stock_name

FORMAT = "prunekit.pruned"
VERSION = 1
READABLE = (1,)
PRUNED_JSON = "pruned.json"
WEIGHTS = "model.safetensors"
ZOO_PREFIXES = ("torchvision:", "timm:", "hf:")
#: The largest tensor a saved architecture may declare (elements); anything above is a corrupt or hostile file.
MAX_TENSOR_ELEMENTS = 2**34
__all__ = ["FORMAT", "VERSION", "PRUNED_JSON", "WEIGHTS", "architecture_spec", "hf_config_for", "load_pruned",
           "save_pretrained_pruned", "save_pruned"]


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


def _named_tensors(model: nn.Module):
    for prefix, module in model.named_modules(remove_duplicate=False):
        for attr, t in list(module._parameters.items()) + list(module._buffers.items()):
            if t is not None:
                yield (f"{prefix}.{attr}" if prefix else attr), module, attr, t


def architecture_spec(model: nn.Module) -> dict[str, Any]:
    """The JSON-ready description of ``model``'s (pruned) architecture; mask buffers are left out."""
    tensors: dict[str, list[int]] = {}
    aliases: dict[str, str] = {}
    first: dict[int, str] = {}
    for name, _m, attr, t in _named_tensors(model):
        if attr.endswith("_mask"):
            continue
        if id(t) in first and first[id(t)] != name:
            aliases[name] = first[id(t)]
        else:
            first[id(t)] = name
            tensors[name] = list(t.shape)
    modules = {n or "": _module_entry(m) for n, m in model.named_modules()}
    return {"tensors": tensors, "aliases": aliases, "modules": modules}


def _weights(model: nn.Module, spec: dict) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The tensors to store (masks folded in: W ⊙ M) and the sparsity of every masked weight."""
    state, masks = {}, {}
    for name, module, attr, t in _named_tensors(model):
        if name not in spec["tensors"]:
            continue
        t = t.detach()
        mask = module._buffers.get(f"{attr}_mask")
        if mask is not None:
            t = t * mask
            masks[name] = 1.0 - float(mask.sum()) / mask.numel()
        state[name] = t.contiguous().cpu()
    return state, masks


def save_pruned(model: nn.Module, path: str | Path, constructor: str | None = None, kwargs: dict | None = None,
                input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
                info: dict | None = None) -> Path:
    """Writes ``pruned.json`` and ``model.safetensors`` under directory ``path`` (created if needed).

    Args:
        constructor: the registered name that builds the original model (``lenet300``, ``torchvision:resnet18``…);
            ``None``: the loader must be given the model or its constructor.
        kwargs: keyword arguments of the constructor.
        input_shape: the input shape a built-in model is built for (also read from ``kwargs``).
        num_classes: the classes a built-in model is built for (also read from ``kwargs``).
        info: extra JSON-ready data stored under ``info``.
    """
    from prunekit._version import __version__
    from prunekit.io.checkpoint import atomic_write_text, save_state_dict

    path = Path(path)
    kwargs = dict(kwargs or {})
    if constructor is not None and ":" not in constructor:  # a built-in model: its two build arguments, named
        input_shape = kwargs.pop("input_shape", input_shape)
        num_classes = kwargs.pop("num_classes", num_classes)
    path.mkdir(parents=True, exist_ok=True)
    spec = architecture_spec(model)
    state, masks = _weights(model, spec)
    meta = {"format": FORMAT, "format_version": VERSION, "prunekit_version": __version__,
            "model": {"name": constructor, "kwargs": kwargs,
                      "input_shape": list(input_shape) if input_shape is not None else None,
                      "num_classes": num_classes},
            "architecture": spec, "masks": masks, "info": dict(info or {})}
    save_state_dict(state, path / WEIGHTS, {"format": FORMAT, "format_version": VERSION})
    atomic_write_text(path / PRUNED_JSON, json.dumps(meta, indent=1))
    return path


# -- loading ---------------------------------------------------------------------------------------------------


def _fail(where: str, field: str, problem: str) -> ModelLoadError:
    return ModelLoadError(f"{where}: field {field!r}: {problem}")


def _read_meta(path: Path) -> dict:
    f = path / PRUNED_JSON
    if not f.is_file():
        for old, what in (("model.json", "a prunekit 0.x masked-model directory (model.json)"),
                          ("spec.json", "a prunekit 0.x structured-model directory (spec.json)"),
                          ("model/spec.json", "a prunekit 0.x structured run directory (model/spec.json)")):
            if (path / old).is_file():
                raise ModelLoadError(f"{path} is {what}, a format this prunekit no longer reads: re-run the recipe "
                                     f"with this prunekit (its output holds {PRUNED_JSON}), or load the model with "
                                     "the prunekit that wrote it and save it again with prunekit.save_pruned")
        if (path / "model" / PRUNED_JSON).is_file():
            return _read_meta(path / "model")
        raise ModelLoadError(f"{path}: no {PRUNED_JSON}; save the model with prunekit.save_pruned")
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{f}: not readable JSON ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{f}: expected a JSON object at the top level, got {type(meta).__name__}")
    if meta.get("format") != FORMAT or meta.get("format_version") not in READABLE:
        raise _fail(str(f), "format_version", f"{meta.get('format')!r} v{meta.get('format_version')!r}; this prunekit "
                    f"reads {FORMAT} v{', v'.join(map(str, READABLE))}")
    _check_meta(meta, str(f))
    return meta


def _is_shape(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v)


def _check_meta(meta: dict, where: str) -> None:
    """Types and bounds of every field read later, so nothing below fails with a raw KeyError/TypeError."""
    m = meta.get("model")
    if not isinstance(m, dict):
        raise _fail(where, "model", f"expected an object, got {m!r}")
    if m.get("name") is not None and not isinstance(m.get("name"), str):
        raise _fail(where, "model.name", f"expected a string or null, got {m.get('name')!r}")
    if not isinstance(m.get("kwargs", {}), dict):
        raise _fail(where, "model.kwargs", f"expected an object, got {m.get('kwargs')!r}")
    if m.get("input_shape") is not None and not (_is_shape(m["input_shape"]) and m["input_shape"]):
        raise _fail(where, "model.input_shape", f"expected a list of sizes, got {m['input_shape']!r}")
    if m.get("num_classes") is not None and not (isinstance(m["num_classes"], int) and m["num_classes"] > 0):
        raise _fail(where, "model.num_classes", f"expected a positive integer, got {m['num_classes']!r}")
    a = meta.get("architecture")
    if not isinstance(a, dict):
        raise _fail(where, "architecture", f"expected an object, got {a!r}")
    for key in ("tensors", "aliases", "modules"):
        if not isinstance(a.get(key), dict):
            raise _fail(where, f"architecture.{key}", f"expected an object, got {a.get(key)!r}")
    for name, shape in a["tensors"].items():
        if not _is_shape(shape) or math.prod(shape) > MAX_TENSOR_ELEMENTS:
            raise _fail(where, f"architecture.tensors.{name}", f"not a plausible tensor shape: {shape!r}")
    for name, target in a["aliases"].items():
        if target not in a["tensors"]:
            raise _fail(where, f"architecture.aliases.{name}", f"names no stored tensor: {target!r}")
    for name, entry in a["modules"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("type"), str)
                and isinstance(entry.get("attrs"), dict)):
            raise _fail(where, f"architecture.modules.{name}", f"expected {{type, attrs}}, got {entry!r}")
        for k, v in entry["attrs"].items():
            if not (k.isidentifier() and not k.startswith("_") and (_is_shape(v) or isinstance(v, int))):
                raise _fail(where, f"architecture.modules.{name}.attrs.{k}",
                            f"expected an integer attribute, got {v!r}")
    if not isinstance(meta.get("masks", {}), dict):
        raise _fail(where, "masks", f"expected an object, got {meta.get('masks')!r}")


def _build_original(meta: dict, where: str, constructor: Callable | None, trust_code: bool) -> nn.Module:
    """The original architecture, from a registered name only (unless the caller opted in)."""
    m = meta["model"]
    name, kwargs = m.get("name"), dict(m.get("kwargs") or {})
    try:
        if constructor is not None:
            model = constructor(**kwargs)
        elif name is None:
            raise _fail(where, "model.name", "null (saved without a constructor name): pass the original model, "
                        "load_pruned(dir, model=...), or its constructor, load_pruned(dir, constructor=...)")
        elif name.startswith(ZOO_PREFIXES):
            model = _build_zoo(name, kwargs)
        elif ":" not in name:
            model = _build_builtin(name, kwargs, m, where)
        elif trust_code:
            from prunekit.models import build_model

            model = build_model(name, tuple(m.get("input_shape") or ()), m.get("num_classes") or 0, kwargs)
        else:
            raise _fail(where, "model.name", f"{name!r} names code to import, and loading never runs code a file "
                        "names: pass the model (model=...) or its constructor (constructor=...), or trust_code=True if "
                        "you trust this file; saved files may name only built-in models and torchvision:/timm:/hf: "
                        "models")
    except ModelLoadError:
        raise
    except Exception as e:
        raise _fail(where, "model", f"building {name!r} with kwargs {kwargs} failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise _fail(where, "model", f"the constructor returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _build_builtin(name: str, kwargs: dict, m: dict, where: str) -> nn.Module:
    from prunekit.models import MODELS

    if name not in MODELS:
        raise _fail(where, "model.name", f"unknown model {name!r}; built-in models: {', '.join(MODELS.names())}")
    if m.get("input_shape") is None or m.get("num_classes") is None:
        raise _fail(where, "model.input_shape", f"built-in model {name!r} needs input_shape and num_classes")
    return MODELS.get(name)(tuple(m["input_shape"]), m["num_classes"], **kwargs)


def _build_zoo(name: str, kwargs: dict) -> nn.Module:
    from prunekit import zoo
    from prunekit.models import source_of

    if not kwargs:
        return zoo.load(name).model
    source = source_of(name)
    if source is not None and source.zoo:
        return zoo.build(name, kwargs)  # weights=None and the zoo's offline builder arguments
    raise ModelLoadError(f"{name}: hf models take no kwargs here; pass the model itself (model=...)")


def _set_attrs(module: nn.Module, attrs: dict, where: str, mname: str) -> None:
    for k, v in attrs.items():
        if callable(getattr(type(module), k, None)) or isinstance(getattr(type(module), k, None), property):
            raise _fail(where, f"architecture.modules.{mname}.attrs.{k}", "names a method, not a size attribute")
        setattr(module, k, tuple(v) if isinstance(v, list) else v)


def _resize(model: nn.Module, spec: dict, where: str) -> None:
    modules = dict(model.named_modules())
    for mname, entry in spec["modules"].items():
        module = modules.get(mname)
        replacement = replacement_named(entry["type"]) if entry.get("replaces") else None
        if module is not None and replacement is not None and entry["replaces"] == type(module).__name__:
            module.__class__ = replacement
        if module is None or type(module).__name__ != entry["type"]:
            raise _fail(where, f"architecture.modules.{mname}", f"module ({entry['type']}) is not in the model given; "
                        "build the same original architecture the pruned model came from")
        _set_attrs(module, entry["attrs"], where, mname)
    new: dict[str, torch.Tensor] = {}
    for name, module, attr, t in list(_named_tensors(model)):
        key = spec["aliases"].get(name, name)
        if key not in spec["tensors"]:
            continue
        if key not in new:
            data = torch.empty(spec["tensors"][key], dtype=t.dtype, device=t.device)
            new[key] = nn.Parameter(data, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else data
        store = module._parameters if attr in module._parameters else module._buffers
        store[attr] = new[key]


def _load_weights(model: nn.Module, spec: dict, f: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not f.is_file():
        raise ModelLoadError(f"{f}: missing; a saved model is {PRUNED_JSON} + {WEIGHTS}")
    try:
        state = load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"{f}: not a readable safetensors file (truncated or corrupt: {e})") from None
    own = model.state_dict()
    for name, target in spec["aliases"].items():
        if target in state:
            state[name] = state[target]
    missing = sorted(k for k in own if k not in state and not k.endswith("_mask"))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelLoadError(f"{f}: the weights do not match {PRUNED_JSON}'s architecture (missing: {missing[:5]}, "
                             f"unexpected: {unexpected[:5]})")
    for k, t in state.items():
        if t.shape != own[k].shape:
            raise ModelLoadError(f"{f}: tensor {k!r} has shape {list(t.shape)}, but {PRUNED_JSON} says "
                                 f"{list(own[k].shape)}")
        if t.dtype != own[k].dtype:
            raise ModelLoadError(f"{f}: tensor {k!r} is {t.dtype}, but the model holds {own[k].dtype} there")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelLoadError(f"{f}: tensor {k!r} holds NaN or infinite values")
    model.load_state_dict(state, strict=False)


def load_pruned(path: str | Path, model: nn.Module | None = None, *,
                constructor: Callable[..., nn.Module] | None = None, trust_code: bool = False) -> nn.Module:
    """Rebuilds the pruned model saved in directory ``path`` (masked or physically smaller).

    Args:
        model: a freshly built *original* (unpruned) model to resize and load into; default: built from the
            registered name in ``pruned.json``.
        constructor: builds the original model (called with the saved ``kwargs``) — the way to load a model
            saved from your own code.
        trust_code: import and call a ``package.module:factory`` named in the file. Only for files you trust.

    Raises:
        ModelLoadError: naming the file and the field (bad JSON, missing or absurd fields, a name that would run
            code, weights that are truncated or do not fit, a directory in an old format).
    """
    path = Path(path)
    meta = _read_meta(path)
    if not (path / PRUNED_JSON).is_file():  # a run directory whose model sits in model/
        path = path / "model"
    where = str(path / PRUNED_JSON)
    if model is None:
        model = _build_original(meta, where, constructor, trust_code)
    try:
        _resize(model, meta["architecture"], where)
        _load_weights(model, meta["architecture"], path / WEIGHTS)
    except ModelLoadError:
        raise
    except Exception as e:  # a file that passed the checks but still does not fit this model
        raise ModelLoadError(f"{where}: does not fit the model given ({type(e).__name__}: {e})") from None
    return model


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
