"""One-shot layer-wise pruning of every Linear layer on calibration data, block by block.

The procedure of SparseGPT (Frantar & Alistarh 2023, §4) and Wanda (Sun et al. 2023, §3):

1. run the calibration batches up to the first of the model's repeated blocks (a transformer's
   ``encoder.layer`` / ``model.layers``) and keep that block's inputs (hidden states and the keyword
   arguments the model passes every block: attention mask, position embeddings, …);
2. for each block in turn: run it on the kept inputs while hooks record what the solver needs about the
   inputs of each of its Linear layers (:class:`~prunekit.pruners.solvers.LayerStats`); prune those layers
   (:data:`~prunekit.pruners.solvers.LAYER_SOLVERS`); run the *pruned* block again and keep its outputs as
   the next block's inputs, so later layers compensate for the error of earlier ones;
3. Linear layers outside the blocks (a pooler, a head) are pruned last, from one pass of the pruned model.

Padded token batches carry their attention mask (``Calibration.attention_mask``, and sentence pairs their
``token_type_ids``): the model sees them, and the
statistics leave out the padded positions, so Wanda's ‖X_i‖ and SparseGPT's XᵀX are those of the real tokens.

A model without a list of repeated blocks (≥ 2 children of one ModuleList/Sequential holding Linear
layers) is one block: one pass prunes all its layers (``LayerwiseReport.blocks`` is None).

Before any pruning, one dense batch checks that each block's output really is the next block's input;
a model whose blocks do not chain (or that has none) is refused unless ``sequential=False`` (every layer
from one pass of the dense model). Masks are installed with :class:`~prunekit.masks.MaskSet`.

Example:
    >>> cfg = LayerwiseConfig(solver="sparsegpt", granularity="nm", nm=(2, 4), exclude=("lm_head",))
    >>> report = prune_layerwise(model, cfg, Calibration(token_ids))
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, PruningError
from prunekit.importance import Calibration, call_model, recording
from prunekit.masks import MaskSet
from prunekit.pruners.configs import LayerwiseConfig
from prunekit.pruners.granularity import check_nm
from prunekit.pruners.solvers import LAYER_SOLVERS, LayerStats

__all__ = ["LayerwiseReport", "find_blocks", "linear_layers", "prune_layerwise"]


@dataclass
class LayerwiseReport:
    """What :func:`prune_layerwise` did: per Linear weight (``name.weight``) the fraction removed, the mask
    holder, the blocks it went through and the calibration tokens each layer saw."""

    layer_sparsity: dict[str, float] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    masks: MaskSet | None = None
    blocks: str | None = None
    tokens: dict[str, int] = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        """Fraction of the pruned layers' weights removed."""
        total = sum(self.sizes.values())
        return sum(self.removed.values()) / total if total else 0.0


def linear_layers(model: nn.Module, exclude: tuple[str, ...] = ()) -> dict[str, nn.Linear]:
    """The model's Linear layers by module name, in model order, minus ``exclude`` patterns.

    Raises:
        ConfigError: a pattern matches no Linear layer, no layer is left, or a weight is tied to another
            parameter (pruning it would prune that one too).
    """
    every = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    unmatched = [p for p in exclude if not any(fnmatch.fnmatchcase(n, p) for n in every)]
    if unmatched:
        raise ConfigError(f"exclude pattern(s) {unmatched} match no Linear layer; Linear layers: "
                          f"{', '.join(list(every)[:8])}{' …' if len(every) > 8 else ''}")
    out = {n: m for n, m in every.items() if not any(fnmatch.fnmatchcase(n, p) for p in exclude)}
    if not out:
        raise ConfigError("no Linear layer to prune: the model has none" if not every else
                          "no Linear layer to prune: exclude leaves none")
    owners: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(n)
    for n, m in out.items():
        shared = [o for o in owners[id(m.weight)] if o != f"{n}.weight"]
        if shared:
            raise ConfigError(f"{n}.weight is the same tensor as {shared[0]} (tied weights): pruning it would prune "
                              f"that too; exclude it (exclude=({n!r},))")
    return out


def find_blocks(model: nn.Module, name: str | None = None) -> tuple[str, nn.Module] | None:
    """The list of repeated blocks: ``name``, or the ModuleList/Sequential with the most (≥ 2) children holding
    Linear layers; None when the model has no such list (it is then one block: one pass prunes every layer)."""
    if name is not None:
        try:
            blocks = model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"blocks={name!r} is not a submodule of the model") from None
        if not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
            raise ConfigError(f"blocks={name!r} is a {type(blocks).__name__}; name an nn.ModuleList or nn.Sequential")
        return name, blocks
    best, count = None, 1
    for n, m in model.named_modules():
        if isinstance(m, (nn.ModuleList, nn.Sequential)):
            k = sum(any(isinstance(x, nn.Linear) for x in c.modules()) for c in m.children())
            if k > count:
                best, count = n, k
    return None if best is None else (best, model.get_submodule(best))


#: keyword arguments of HF blocks that carry a key/value cache
_CACHES = ("past_key_value", "past_key_values", "layer_past")


class _Stop(Exception):
    """Raised by the hook on the first block: the rest of the model need not run."""


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return kwargs["hidden_states"]
    raise PruningError("the first block was not called with a tensor as its first argument or hidden_states=; "
                       "set sequential=False")


def _with_hidden(args: tuple, kwargs: dict, h: torch.Tensor) -> tuple[tuple, dict]:
    if args and isinstance(args[0], torch.Tensor):
        return (h, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": h}


def _first(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def _batches(calibration: Calibration, device) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Each calibration batch with its keyword inputs (attention mask, token types; empty without them)."""
    for (xb, _), kw in zip(calibration.batches(), calibration.keywords(), strict=True):
        yield xb.to(device), {k: v.to(device) for k, v in kw.items()}


def _call(model: nn.Module, xb: torch.Tensor, kw: dict[str, torch.Tensor]) -> Any:
    return call_model(model, xb, kw)


def _capture(model: nn.Module, first: nn.Module, calibration: Calibration, device) -> list[tuple[tuple, dict]]:
    """The inputs of block 0 for every calibration batch."""
    kept: list[tuple[tuple, dict]] = []

    def hook(_module, args, kwargs):
        # a key/value cache would grow each time a block is re-run: blocks run without one
        kept.append((args, {k: None if k in _CACHES else False if k == "use_cache" else v for k, v in kwargs.items()}))
        raise _Stop

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for xb, kw in _batches(calibration, device):
            try:
                _call(model, xb, kw)
            except _Stop:
                continue
            raise PruningError("the first block never ran on the calibration batch; name the blocks with blocks= "
                               "or set sequential=False")
    finally:
        handle.remove()
    return kept


def _check_chain(model: nn.Module, name: str, blocks: nn.Module, x: torch.Tensor, kw: dict[str, torch.Tensor]) -> None:
    """Raises unless each block's output is the next block's input (on one dense calibration batch)."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [(b, lambda _m, a, kw, out: seen.append((_hidden(a, kw), _first(out)))) for b in blocks]
    handles = [b.register_forward_hook(fn, with_kwargs=True) for b, fn in hooks]
    try:
        _call(model, x, kw)
    finally:
        for h in handles:
            h.remove()
    if len(seen) != len(blocks):
        raise PruningError(f"the {len(blocks)} blocks of {name!r} ran {len(seen)} times on one batch; set "
                           f"sequential=False or name other blocks with blocks=")
    for i in range(len(seen) - 1):
        if seen[i + 1][0].shape != seen[i][1].shape or not torch.allclose(seen[i + 1][0], seen[i][1], atol=1e-5):
            raise PruningError(f"block {i + 1} of {name!r} does not receive block {i}'s output, so they cannot be "
                               f"pruned in sequence; set sequential=False or name other blocks with blocks=")


def _prune(layers: dict[str, nn.Linear], stats: dict[str, LayerStats], config: LayerwiseConfig, masks: MaskSet,
           report: LayerwiseReport) -> None:
    solver = LAYER_SOLVERS.get(config.solver)
    for n, layer in layers.items():
        st = stats.get(n, LayerStats())
        if solver.needs and not st.tokens:
            raise PruningError(f"Linear layer {n!r} did not run on the calibration data, so {config.solver!r} "
                               f"cannot prune it; exclude it (exclude=({n!r},))")
        with torch.no_grad():
            new, mask = solver.solve(layer.weight, st, config)
            if new is not None:
                layer.weight.copy_(new)
        masks.set(f"{n}.weight", mask)
        report.layer_sparsity[f"{n}.weight"] = 1.0 - float(mask.mean())
        report.removed[f"{n}.weight"] = int(mask.numel() - mask.sum())
        report.sizes[f"{n}.weight"] = mask.numel()
        report.tokens[n] = st.tokens


def _stat_hooks(layers: dict[str, nn.Linear], stats: dict[str, LayerStats], needs: frozenset[str], current: dict):
    """Hooks recording each layer's inputs; ``current["mask"]`` is the attention mask of the batch running (padded
    positions are left out: :meth:`LayerStats.add`)."""
    def make(n):
        def hook(_module, args):
            stats.setdefault(n, LayerStats()).add(args[0], "hessian" in needs, "sq_sum" in needs, current.get("mask"))
        return hook
    return [(m, make(n)) for n, m in layers.items()] if needs else []


def _full_pass(model, layers, calibration, config, masks, report, device) -> None:
    stats: dict[str, LayerStats] = {}
    needs = LAYER_SOLVERS.get(config.solver).needs
    if needs:
        current: dict = {}
        with recording(_stat_hooks(layers, stats, needs, current)):
            for xb, kw in _batches(calibration, device):
                current["mask"] = kw.get("attention_mask")
                _call(model, xb, kw)
    _prune(layers, stats, config, masks, report)


def _sequential(model, layers, calibration, config, masks, report, device) -> None:
    found = find_blocks(model, config.blocks)
    if found is None:  # one block: the whole model
        _full_pass(model, layers, calibration, config, masks, report, device)
        return
    name, blocks = found
    report.blocks = name
    _check_chain(model, name, blocks, *next(_batches(calibration, device)))
    inputs = _capture(model, blocks[0], calibration, device)
    attention = [kw.get("attention_mask") for _, kw in _batches(calibration, device)]
    needs = LAYER_SOLVERS.get(config.solver).needs
    inside: set[str] = set()
    for block in blocks:
        own = {n: m for n, m in layers.items() if any(m is x for x in block.modules())}
        inside |= set(own)
        stats: dict[str, LayerStats] = {}
        if own and needs:
            current: dict = {}
            with recording(_stat_hooks(own, stats, needs, current)):
                for (args, kwargs), mb in zip(inputs, attention, strict=True):
                    current["mask"] = mb
                    block(*args, **kwargs)
        _prune(own, stats, config, masks, report)
        inputs = [_with_hidden(a, kw, _first(block(*a, **kw))) for a, kw in inputs]
    rest = {n: m for n, m in layers.items() if n not in inside}
    if rest:
        _full_pass(model, rest, calibration, config, masks, report, device)


def prune_layerwise(model: nn.Module, config: LayerwiseConfig,
                    calibration: Calibration | None = None) -> LayerwiseReport:
    """Prunes every (not excluded) Linear layer of ``model`` in place, as ``config`` says.

    Args:
        model: any module; its Linear layers get masks (and new weights with ``sparsegpt``).
        config: the solver, the sparsity or N:M pattern, the comparison group, …
        calibration: inputs the model is called with (``model(x)``, e.g. token ids of shape (N, L)) in
            mini-batches of ``calibration.batch_size``; labels are not used. Needed by ``wanda`` and ``sparsegpt``.
            With ``calibration.attention_mask`` the model is called as ``model(x, attention_mask=mask)`` and the
            statistics of every layer whose input has one row per token count the real tokens only; with
            ``calibration.token_type_ids`` (sentence pairs) also ``token_type_ids=`` where the model takes it.

    Raises:
        ConfigError: calibration missing for a solver that needs it, a Linear whose input size is not a
            multiple of M (N:M; the message names it), tied weights, unknown ``blocks``; all before any pruning.
        PruningError: the blocks do not feed each other, or a layer never ran on the calibration data.
    """
    layers = linear_layers(model, config.exclude)
    if config.granularity == "nm":
        for n, m in layers.items():
            check_nm(f"{n}.weight", m.weight.shape, config.nm)
    solver = LAYER_SOLVERS.get(config.solver)
    if solver.needs and calibration is None:
        raise ConfigError(f"solver {config.solver!r} prunes from calibration inputs: pass calibration=Calibration(x) "
                          f"(e.g. 128 token sequences of your text), or use solver 'magnitude'")
    report = LayerwiseReport(masks=MaskSet(model))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if not solver.needs:
                _prune(layers, {}, config, report.masks, report)
            elif config.sequential:
                _sequential(model, layers, calibration, config, report.masks, report, device)
            else:
                _full_pass(model, layers, calibration, config, report.masks, report, device)
    finally:
        model.train(was_training)
    if config.permanent:
        report.masks.make_permanent()
    return report
