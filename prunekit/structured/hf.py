"""Hugging Face transformers models after structured pruning: remove given heads, save a plain HF directory.

:func:`save_hf` writes a pruned transformers model as a directory that ``AutoModel.from_pretrained(dir)``
and ``SentenceTransformer(dir)`` load **without prunekit**, with the same outputs: ``config.json``,
``model.safetensors``, the tokenizer and the sentence-transformers files (``modules.json``, the pooling
config, ``sentence_bert_config.json``), written atomically (a staging directory moved into place).

What a stock config can say. transformers 5 builds every layer of a BERT or CLIP tower from one config:
one ``intermediate_size`` and a head size of ``hidden_size / num_attention_heads`` (the ``pruned_heads``
field of transformers 4 is gone). So

* FFN widths that are equal in every layer of a tower are written as that tower's ``intermediate_size``
  (exact, and the loaded model is as small as prunekit's);
* attention layers that lost heads, and FFN layers narrower than the widest one, are **zero-padded** back
  to the shapes the config describes: a padded head has zero query, key, value and output weights, a
  padded neuron zero input and output weights, so each adds exactly nothing and the outputs are equal —
  but the loaded model computes them. ``config.json`` records this under ``prunekit_padding``.

Configs with an explicit ``head_dim`` and uniformly pruned layers (LLaMA-style) are written exactly
(:func:`~prunekit.structured.hf_config_for`).

``layout="compact"`` keeps exactly the pruned shapes, every layer its own: ``config.json`` records them
(``compact_shapes``, ``compact_attrs``) and a 30-line module written beside the weights (importing only torch
and transformers; no prunekit) subclasses the stock class to build them. transformers runs it only when
asked: ``AutoModel.from_pretrained(dir, trust_remote_code=True)``, ``SentenceTransformer(dir,
trust_remote_code=True)``; without the flag it refuses the directory (its own ``model_type``) rather than
loading the stock class and re-initialising the tensors whose shapes differ.

Example:
    >>> prune_(model, StructuredConfig(sparsity={"heads": 0.5, "channels": 0.5}), example_inputs=batch)
    >>> save_hf(model, "out/minilm-pruned", example_inputs=batch)   # tokenizer etc. from model.name_or_path
    >>> SentenceTransformer("out/minilm-pruned")                     # no prunekit needed
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import ConfigError, PruningError
from prunekit.graph import DependencyGraph, split_inputs
from prunekit.structured.pruner import prune_groups
from prunekit.structured.serialize import _FFN_SUFFIXES, hf_config_for

__all__ = ["LAYOUTS", "HFSaved", "attention_layers", "compact_layout", "hf_layout", "prune_heads", "remove_padding",
           "save_hf"]

#: How :func:`save_hf` writes what a stock config cannot say (see the module docstring).
LAYOUTS = ("stock", "compact")

#: Files of a sentence-transformers model directory besides the transformer's own.
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
#: Tokenizer files copied from the source directory when no tokenizer object is given.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json")


@dataclass
class HFSaved:
    """What :func:`save_hf` wrote.

    Attributes:
        path: the directory.
        exact: the loaded model has the pruned model's shapes (nothing was padded).
        padded: ``{tensor name: [pruned shape, saved shape]}`` of every zero-padded tensor.
        files: the files written, relative to ``path``.
        max_abs_diff: largest output difference between the pruned model and the saved one reloaded
            (None when no ``example_inputs`` were given).
    """

    path: Path
    exact: bool
    padded: dict[str, list[list[int]]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None


# ---------------------------------------------------------------------------------------------- heads
def attention_layers(graph: DependencyGraph) -> list[str]:
    """Names of the head groups of ``graph`` (one per attention layer), in forward order."""
    return [g.name for g in graph.prunable_groups(False) if graph.unit_kind(g) == "heads"]


def prune_heads(model: nn.Module, heads: Mapping[int | str, Iterable[int]], example_inputs: Any) -> dict[str, int]:
    """Removes the given attention heads, in place (transformers 4's ``model.prune_heads``, for any model).

    Args:
        heads: ``{layer: [head indices]}``; a layer is its index among the model's attention layers in
            forward order (BERT: ``encoder.layer.N``; CLIP: the text tower's layers, then the vision
            tower's) or the name of its head group (:func:`attention_layers`). Head indices are those of
            the layer as it is now.
        example_inputs: one input batch (a dict of keyword inputs for a transformers model).

    Returns:
        Heads removed per head group.

    Raises:
        ConfigError: an unknown layer, a head index out of range, or every head of a layer (before any change).
    """
    graph = DependencyGraph.build(model, example_inputs)
    layers = attention_layers(graph)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no attention heads prunekit can remove (no head split was "
                          f"traced); see DependencyGraph.build(model, inputs).summary()")
    plan: dict[str, np.ndarray] = {}
    for key, idx in heads.items():
        name = _layer_name(key, layers)
        size = graph.group(name).size
        idx = np.unique(np.asarray(list(idx), dtype=np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= size):
            raise ConfigError(f"attention layer {key!r} ({name}) has {size} heads (0..{size - 1}); got head "
                              f"{int(idx.max() if idx.max() >= size else idx.min())}")
        if idx.size >= size:
            raise ConfigError(f"cannot remove {idx.size} heads from attention layer {key!r} ({name}): it has {size}; "
                              f"keep at least one (remove at most {size - 1})")
        if idx.size:
            plan[name] = idx
    prune_groups(graph, plan)
    return {k: len(v) for k, v in plan.items()}


def remove_padding(model: nn.Module, example_inputs: Any, atol: float = 1e-4) -> dict[str, int]:
    """Removes again, in place, the zero heads and FFN neurons that :func:`save_hf` (``layout="stock"``) padded in.

    transformers 5 builds every layer of a tower with the config's head count, so a directory saved in the stock
    layout brings a pruned layer's removed heads back as zero heads (``config.prunekit_padding`` lists the padded
    tensors): exact, but computed. Removing them restores the pruned shapes and the pruned cost. Only units whose
    every weight and bias is zero, in groups holding a padded tensor, are removed (a padded unit that training
    made non-zero since is a real unit now and stays); the outputs on ``example_inputs`` are checked unchanged.

    Returns:
        Units removed per group (empty when the model was not padded).

    Raises:
        PruningError: the outputs changed by more than ``atol`` (cannot happen for all-zero units: a bug).
    """
    from prunekit.structured.equivalence import all_zero_units

    config = getattr(model, "config", None)
    padded = set(getattr(config, "prunekit_padding", None) or {})
    if not padded:
        return {}
    graph = DependencyGraph.build(model, example_inputs)
    plan: dict[str, np.ndarray] = {}
    for g in graph.prunable_groups():
        if not any(m.name in padded for m in g.members):
            continue
        idx = np.flatnonzero(all_zero_units(graph, g.name) & ~g.pinned)[: g.size - 1]
        if idx.size:
            plan[g.name] = idx
    before = copy.deepcopy(model).eval()
    prune_groups(graph, plan)
    diff = _max_diff(model, before, example_inputs)
    if not diff <= atol:  # removing all-zero units of exact groups cannot change outputs: a bug if it did
        raise PruningError(f"removing the zero-padded units changed the outputs by {diff:.3g} (> {atol}); "
                           f"please report this, with the model directory")
    del config.prunekit_padding  # the modules hold the pruned shapes again
    return {k: int(len(v)) for k, v in plan.items()}


def _layer_name(key: int | str, layers: list[str]) -> str:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise ConfigError(f"an attention layer is an index or a head-group name, got {key!r}")
    if isinstance(key, int):
        if not 0 <= key < len(layers):
            raise ConfigError(f"the model has {len(layers)} attention layers (0..{len(layers) - 1}); got layer {key}")
        return layers[key]
    if key not in layers:
        raise ConfigError(f"no attention layer named {key!r}; they are: {', '.join(layers[:8])}"
                          + (" ..." if len(layers) > 8 else ""))
    return key


# ---------------------------------------------------------------------------------------------- layout
def _configs(config: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """The config and its sub-configs (CLIP's ``text_config``, ``vision_config``), with their attribute paths."""
    out = [(path, config)]
    for k, v in vars(config).items():
        if hasattr(v, "to_dict") and hasattr(v, "model_type") and not k.startswith("_"):
            out += _configs(v, (*path, k))
    return out


def _owner_config(model: nn.Module, module_name: str) -> Any:
    """The config of the innermost module above ``module_name`` that holds one (a tower's own config)."""
    found = model.config
    parts = module_name.split(".")
    for i in range(1, len(parts)):
        cfg = getattr(model.get_submodule(".".join(parts[:i])), "config", None)
        if hasattr(cfg, "to_dict"):
            found = cfg
    return found


def _ffn_config(model: nn.Module) -> Any:
    """A copy of ``model.config`` whose ``intermediate_size`` of each (sub-)config is the widest FFN of its layers."""
    config = copy.deepcopy(model.config)
    originals = {id(c): p for p, c in _configs(model.config)}
    by_type = {getattr(c, "model_type", None): p for p, c in _configs(model.config)}
    widths: dict[tuple[str, ...], set[int]] = {}
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if name.endswith(_FFN_SUFFIXES) and isinstance(w, torch.Tensor) and w.ndim == 2:
            owner = _owner_config(model, name)
            path = originals.get(id(owner), by_type.get(getattr(owner, "model_type", None)))
            if path is not None:
                widths.setdefault(path, set()).add(w.shape[1] if type(m).__name__ == "Conv1D" else w.shape[0])
    for path, sizes in widths.items():
        target = config
        for k in path:
            target = getattr(target, k)
        if isinstance(getattr(target, "intermediate_size", None), int):
            target.intermediate_size = max(sizes)
    return config


def _padded(t: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    if t.ndim != len(shape) or any(a > b for a, b in zip(t.shape, shape, strict=True)):
        raise PruningError(f"{name}: the pruned tensor {list(t.shape)} does not fit in the config's shape "
                           f"{list(shape)}; only removed heads and FFN neurons can be padded back (a pruned hidden "
                           f"size cannot): prune with exact_only=True, or save with prunekit.save_pruned")
    out = t.new_zeros(shape)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


def hf_layout(model: nn.Module) -> tuple[Any, dict[str, torch.Tensor], dict[str, list[list[int]]]]:
    """The config and state dict a stock transformers class loads with the pruned model's outputs.

    Returns:
        ``(config, state, padded)``: ``padded`` maps each zero-padded tensor to its pruned and saved shapes
        (empty when the config expresses the pruned shape exactly).

    Raises:
        PruningError: ``model`` is not a transformers model, or a tensor shrank where padding is not exact.
    """
    if not (hasattr(model, "config") and hasattr(model.config, "to_dict") and hasattr(model, "save_pretrained")):
        raise PruningError(f"save_hf saves transformers models (with .config and .save_pretrained); got "
                           f"{type(model).__name__}: use prunekit.save_pruned")
    state = {k: v.detach() for k, v in model.state_dict().items()}
    try:
        return hf_config_for(model), state, {}
    except PruningError:
        pass
    config = _ffn_config(model)
    with torch.device("meta"):
        probe = type(model)(config)
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    missing = sorted(set(state) ^ set(want))
    if missing:
        raise PruningError(f"{type(model).__name__} built from its config has other tensors than the pruned model "
                           f"({missing[:3]}); save it with prunekit.save_pruned")
    padded = {}
    for k, t in state.items():
        if tuple(t.shape) != want[k]:
            padded[k] = [list(t.shape), list(want[k])]
            state[k] = _padded(t, want[k], k)
    config.prunekit_padding = {k: v[0] for k, v in padded.items()}  # the pruned shapes, for the record
    return config, state, padded


# ---------------------------------------------------------------------------------------------- compact layout
#: The module ``layout="compact"`` writes beside the weights (loaded with ``trust_remote_code=True``).
COMPACT_MODULE = "modeling_prunekit_compact"
_COMPACT_SOURCE = '''"""{base} with the layer shapes recorded in config.json (``compact_shapes``, ``compact_attrs``).

Written by prunekit's save_hf(layout="compact"): the pruned model keeps only the heads and FFN neurons it has
(transformers 5 configs give every layer of a tower the same sizes). Imports only torch and transformers.
The config's own model_type makes transformers refuse this directory without trust_remote_code=True, instead
of building the stock model and re-initialising every tensor whose shape differs.
"""

from torch import nn
from transformers import {base} as _Base
from transformers import {base_config} as _BaseConfig


class {name}Config(_BaseConfig):
    model_type = "{model_type}"


class {name}(_Base):
    config_class = {name}Config

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        for tensor, shape in (getattr(config, "compact_shapes", None) or {{}}).items():
            owner, _, attr = tensor.rpartition(".")
            module = self.get_submodule(owner)
            old = getattr(module, attr)
            module.register_parameter(attr, nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad))
        for owner, values in (getattr(config, "compact_attrs", None) or {{}}).items():
            module = self.get_submodule(owner)
            for key, value in values.items():
                setattr(module, key, value)
'''


def _stock_class(model: nn.Module) -> type:
    """The transformers class ``model`` is (or derives from, when it was loaded from a compact directory)."""
    import transformers

    for cls in type(model).__mro__:
        if getattr(transformers, cls.__name__, None) is cls:
            return cls
    raise PruningError(f"layout 'compact' rebuilds {type(model).__name__} from a class transformers exports; "
                       f"none of its bases is one: use layout='stock'")


def _int_attrs(module: nn.Module) -> dict[str, int]:
    return {k: v for k, v in vars(module).items()
            if isinstance(v, int) and not isinstance(v, bool) and not k.startswith("_")}


def compact_layout(model: nn.Module) -> tuple[Any, dict[str, torch.Tensor], str, str]:
    """The config (with ``compact_shapes``/``compact_attrs``/``auto_map``), state, class name and module source
    of ``layout="compact"``: the loaded model has exactly the pruned shapes."""
    stock = _stock_class(model)
    config = copy.deepcopy(model.config)
    for key in ("compact_shapes", "compact_attrs", "auto_map", "prunekit_padding"):
        if hasattr(config, key):
            delattr(config, key)
    with torch.device("meta"):
        base = stock(config)
    base_state = base.state_dict()
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if set(state) != set(base_state):
        raise PruningError(f"{stock.__name__} built from the config has other tensors than the pruned model "
                           f"({sorted(set(state) ^ set(base_state))[:3]}); save it with prunekit.save_pruned")
    shapes = {k: list(v.shape) for k, v in state.items() if tuple(v.shape) != tuple(base_state[k].shape)}
    base_modules = dict(base.named_modules())
    attrs = {}
    for name, module in model.named_modules():
        theirs = _int_attrs(base_modules[name]) if name in base_modules else {}
        changed = {k: v for k, v in _int_attrs(module).items() if k in theirs and theirs[k] != v}
        if changed:
            attrs[name] = changed
    name = f"PrunekitCompact{stock.__name__}"
    model_type = f"prunekit_compact_{config.model_type}"
    code = _COMPACT_SOURCE.format(base=stock.__name__, base_config=type(config).__name__, name=name,
                                  model_type=model_type)
    config.compact_shapes, config.compact_attrs = shapes, attrs
    config.auto_map = {"AutoConfig": f"{COMPACT_MODULE}.{name}Config", "AutoModel": f"{COMPACT_MODULE}.{name}"}
    return config, state, name, code


def _compact_class(stage: Path, name: str) -> type:
    """The class of the module just written to ``stage`` (prunekit's own template), for the check."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_prunekit_compact_{id(stage)}", stage / f"{COMPACT_MODULE}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


# ---------------------------------------------------------------------------------------------- saving
def _source_dir(model: nn.Module, source: str | Path | None) -> Path | None:
    src = source if source is not None else getattr(model, "name_or_path", None)
    return Path(src) if src and Path(src).is_dir() else None


def _copy_extras(src: Path | None, stage: Path, tokenizer: Any, sentence_transformers: bool | None,
                 config: Any) -> None:
    if tokenizer is not None:
        tokenizer.save_pretrained(str(stage))
    elif src is not None:
        for f in TOKENIZER_FILES:
            if (src / f).is_file():
                shutil.copy2(src / f, stage / f)
    has_st = src is not None and (src / "modules.json").is_file()
    if sentence_transformers is False:
        return
    if has_st:
        _copy_st(src, stage)
    elif sentence_transformers:
        _write_default_st(stage, config)


def _copy_st(src: Path, stage: Path) -> None:
    try:
        modules = json.loads((src / "modules.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{src / 'modules.json'}: not readable JSON ({e}); fix it or pass "
                          f"sentence_transformers=False") from None
    for f in ST_FILES:
        if (src / f).is_file():
            shutil.copy2(src / f, stage / f)
    for entry in modules if isinstance(modules, list) else []:
        sub = entry.get("path") if isinstance(entry, dict) else None
        if sub and (src / sub).is_dir() and not Path(sub).is_absolute() and ".." not in Path(sub).parts:
            shutil.copytree(src / sub, stage / sub)


def _write_default_st(stage: Path, config: Any) -> None:
    """Transformer + mean pooling, as sentence-transformers builds for a plain encoder."""
    text = getattr(config, "text_config", None) or config
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (stage / "modules.json").write_text(json.dumps(modules, indent=2))
    (stage / "1_Pooling").mkdir()
    (stage / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": text.hidden_size, "pooling_mode_mean_tokens": True}, indent=2))
    (stage / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": int(getattr(text, "max_position_embeddings", 512)), "do_lower_case": False}, indent=2))


def _rebuilt(model: nn.Module, config: Any, state: dict[str, torch.Tensor]) -> nn.Module:
    """A stock instance of ``type(model)`` built from ``config`` holding ``state`` (what from_pretrained gives)."""
    fresh = type(model)(config)  # on the CPU: non-persistent buffers (position ids) must hold real values
    fresh.load_state_dict(state, strict=True)
    return fresh.eval()


def _named_outputs(out: Any) -> dict[str, torch.Tensor]:
    from prunekit.graph import iter_tensors

    if isinstance(out, Mapping):  # a transformers ModelOutput
        return {str(k): v for k, v in out.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    return {str(i): t for i, t in enumerate(iter_tensors(out)) if t.is_floating_point()}


@torch.no_grad()
def _max_diff(a: nn.Module, b: nn.Module, example_inputs: Any) -> float:
    args, kwargs = split_inputs(example_inputs)
    was = a.training
    a.eval()
    try:
        out_a, out_b = _named_outputs(a(*args, **kwargs)), _named_outputs(b(*args, **kwargs))
    finally:
        a.train(was)
    for k, t in out_a.items():
        if k not in out_b or out_b[k].shape != t.shape:
            raise PruningError(f"output {k!r} of the pruned model has shape {list(t.shape)}, the saved model's "
                               f"{list(out_b[k].shape) if k in out_b else 'none'}: units feeding it were removed "
                               f"because nothing read that output while pruning (BERT's pooler under a wrapper that "
                               f"mean-pools); prune with that module excluded (StructuredConfig(exclude=(...,))); "
                               f"nothing was written")
    return max((float((t - out_b[k]).abs().max()) for k, t in out_a.items() if t.numel()), default=0.0)


def save_hf(model: nn.Module, path: str | Path, *, layout: str = "stock", tokenizer: Any = None,
            source: str | Path | None = None, sentence_transformers: bool | None = None, example_inputs: Any = None,
            atol: float = 1e-4, overwrite: bool = False) -> HFSaved:
    """Writes ``model`` (pruned or not) as a plain Hugging Face directory; see the module docstring.

    Args:
        path: the directory; created whole or not at all (a staging directory is moved into place).
        layout: ``stock`` (loads with the stock class, no flags; what the config cannot say is zero-padded)
            or ``compact`` (exactly the pruned shapes, from a small modeling file written beside the weights
            that imports only torch and transformers: load with ``trust_remote_code=True``).
        tokenizer: a tokenizer to save beside the weights; default: the tokenizer files of ``source``.
        source: the directory the model was loaded from (default: ``model.name_or_path`` if it is a
            directory); its tokenizer and sentence-transformers files are copied.
        sentence_transformers: ``None``: copy the source's sentence-transformers files if it has any;
            ``True``: also write mean pooling files when it has none; ``False``: none.
        example_inputs: inputs on which the saved model (rebuilt from the files' config and weights, as
            ``from_pretrained`` does) is checked against ``model`` before anything is written.
        atol: the largest output difference that check accepts.
        overwrite: replace an existing directory prunekit wrote (never one holding other files).

    Raises:
        PruningError: not a transformers model; a shape the config cannot hold even padded; the check failed.
        OutputExistsError: ``path`` exists (without ``overwrite``, or not written by prunekit).
    """
    from prunekit.io.outdir import check_output_dir, staged_output

    if layout not in LAYOUTS:
        raise ConfigError(f"save_hf layout={layout!r}: choose one of {', '.join(LAYOUTS)}")
    check_output_dir(path, overwrite)  # before any work
    padded: dict[str, list[list[int]]] = {}
    if layout == "stock":
        config, state, padded = hf_layout(model)
        compact = None
    else:
        config, state, name, code = compact_layout(model)
        compact = (name, code)
    src = _source_dir(model, source)
    with staged_output(path, overwrite) as stage:  # an error below deletes the staging directory: nothing written
        if compact is None:
            fresh = _rebuilt(model, config, state)
        else:
            (stage / f"{COMPACT_MODULE}.py").write_text(compact[1])
            cls = _compact_class(stage, compact[0])
            config = cls.config_class(**config.to_dict())  # its own model_type (see the module it wrote)
            fresh = cls(config)
            fresh.load_state_dict(state, strict=True)
            fresh.eval()
        diff = None if example_inputs is None else _max_diff(model, fresh, example_inputs)
        if diff is not None and not diff <= atol:
            raise PruningError(f"the model as saved would differ from the pruned model by {diff:.3g} (> atol {atol}) "
                               f"on the example inputs; nothing was written")
        fresh.save_pretrained(str(stage))
        _copy_extras(src, stage, tokenizer, sentence_transformers, config)
        files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
    return HFSaved(Path(path), not padded, padded, files, diff)
