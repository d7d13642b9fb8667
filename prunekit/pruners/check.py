"""``check``: prune a model once and prove the result (forward, shapes, equivalence, size, speed).

Used by ``prunekit check`` and by the coverage benchmark, so both report the same things.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, PrunekitError, PruningError
from prunekit.graph import DependencyGraph, Inputs, iter_tensors, raise_no_groups, split_inputs
from prunekit.importance import check_needs
from prunekit.inputs import describe_inputs, perturbed
from prunekit.measure import count_macs, count_params
from prunekit.pruners.configs import StructuredConfig
from prunekit.pruners.selection import select_units
from prunekit.structured.apply import failing_module
from prunekit.structured.equivalence import snapshot_members, zero_members
from prunekit.structured.pruner import prune_with_fallback

TOLERANCE = 1e-5  # on max |a - b| / max(1, max |a|)


@dataclass
class CheckReport:
    """Everything ``prunekit check --json`` prints."""

    model: str
    ok: bool = False
    error: str | None = None
    inputs: str = ""  # what the model was run on (shapes, dtypes)
    kept: dict[str, str] = field(default_factory=dict)  # modules left whole on purpose, with the reason
    worst_output: str | None = None  # the output leaf with the largest difference (out[0]['boxes'], ...)
    ratio: float = 0.5
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    equivalent: bool = False
    max_rel_diff: float | None = None
    seconds: float = 0.0
    capture_seconds: float = 0.0
    groups: int = 0
    groups_pruned: int = 0
    units_removed: int = 0
    latency_before_ms: float | None = None
    latency_after_ms: float | None = None
    pinned_by: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    exact_only: bool = True
    redrawn: list[str] = field(default_factory=list)
    # shape-only runs (graph capture, the pruned model's check) that had to be repeated as real forwards
    shape_only_fallbacks: int = 0
    fallback_reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_forward(model: nn.Module, example_inputs: Any) -> Any:
    args, kwargs = split_inputs(example_inputs)
    with torch.no_grad():
        return model(*args, **kwargs)


def compare(a: Any, b: Any) -> float:
    """Largest relative difference between two nested outputs; inf if their structure differs."""
    return compare_leaves(a, b)[0]


def _leaves(value: Any, path: str = "out"):
    """``(path, leaf)`` of nested outputs: tuples, lists, dicts, HF ModelOutputs, detection lists of dicts."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    elif hasattr(value, "to_tuple"):
        yield from _leaves(value.to_tuple(), path)
    elif isinstance(value, (int, float, bool, str, type(None))):
        yield path, value


def compare_leaves(a: Any, b: Any) -> tuple[float, str | None]:
    """Compares two nested outputs leaf by leaf: the largest relative difference (max |a - b| / max(1, max |a|))
    and the path of the leaf where it is (``out['boxes']``, ``out[0]['scores']``); inf with the path of the
    first leaf whose name, shape, dtype or (for integers and other values) content differs."""
    la, lb = list(_leaves(a)), list(_leaves(b))
    for (pa, _), (pb, _) in zip(la, lb, strict=False):
        if pa != pb:
            return float("inf"), pa
    if len(la) != len(lb):
        return float("inf"), (la[len(lb)][0] if len(la) > len(lb) else lb[len(la)][0])
    worst, where = 0.0, None
    for (path, x), (_, y) in zip(la, lb, strict=True):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            if x != y and not (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
                return float("inf"), path
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            return float("inf"), path
        if x.numel() == 0:
            continue
        if not x.is_floating_point() and not x.is_complex():
            if not torch.equal(x, y):
                return float("inf"), path
            continue
        scale = max(1.0, float(x.abs().max()))
        diff = float((x - y).abs().max()) / scale
        if diff > worst or where is None:
            worst, where = max(worst, diff), path
    return worst, where


def _module_calls(model: nn.Module, example_inputs: Any) -> list[str]:
    """The modules that own parameters, in the order one forward calls them."""
    calls: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _a, n=name: calls.append(n))
               for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    try:
        run_forward(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    return calls


def control_flow_difference(model: nn.Module, example_inputs: Any) -> str | None:
    """Runs ``model`` on its example inputs and on :func:`~prunekit.inputs.perturbed` ones (floats negated, integers
    redrawn) and compares which parameterised modules run, in which order. A difference means the forward branches
    on input values (``b(h) if x.sum() > 0 else c(h)``): a graph captured on one input misses the other branch, and
    the pruned model may fail there. Returns a description of the first difference, or None.
    Inputs the model refuses once perturbed tell nothing: None."""
    first = _module_calls(model, example_inputs)
    try:
        second = _module_calls(model, perturbed(example_inputs))
    except Exception:
        return None
    if first == second:
        return None
    i = next((k for k, (x, y) in enumerate(zip(first, second, strict=False)) if x != y), min(len(first), len(second)))
    a = first[i] if i < len(first) else "(end of forward)"
    b = second[i] if i < len(second) else "(end of forward)"
    return (f"the forward depends on input values: call {i + 1} of a parameterised module is {a!r} on the example "
            f"inputs but {b!r} on other inputs ({len(first)} vs {len(second)} calls); a graph captured on one input "
            "misses the other branch and the pruned model may fail there. Make the branch static, or prune each "
            "branch's modules with exclude=")


def time_forward(model: nn.Module, example_inputs: Any, repeats: int = 10, warmup: int = 2) -> float:
    """Median CPU latency of one forward, in ms."""
    for _ in range(warmup):
        run_forward(model, example_inputs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_forward(model, example_inputs)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _macs(model: nn.Module, example_inputs: Any) -> int:
    args, kwargs = split_inputs(example_inputs)
    return int(count_macs(model, *args, **kwargs).dense)


def _unpruned_macs(model: nn.Module, example_inputs: Any) -> int:
    """MACs of the model before pruning; a model that cannot run on its inputs is a ConfigError."""
    try:
        return _macs(model, example_inputs)
    except PrunekitError:
        raise
    except Exception as e:
        where, name = failing_module(e, model)
        got = _inputs_of(model, name, example_inputs) if name is not None else ""
        raise ConfigError(f"the unpruned model fails on its example inputs in {where}{got}: "
                          f"{_first_line(e)}; fix the model or its inputs (nothing was pruned)") from e


def _inputs_of(model: nn.Module, name: str, example_inputs: Any) -> str:
    """`` (it got [1, 5, 8, 8] float32)``: what the failing module was called with, from one more forward."""
    seen: list[str] = []

    def hook(_m, args, kwargs):
        if not seen:
            seen.append(describe_inputs(Inputs(*args, **kwargs)))

    handle = dict(model.named_modules())[name].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run_forward(model, example_inputs)
    except Exception:  # noqa: S110 (the same failure again; only the hook's record is wanted)
        pass
    finally:
        handle.remove()
    return f" (it got {seen[0]})" if seen else ""


def _where(e: BaseException, model: nn.Module) -> str:
    return failing_module(e, model)[0]


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"


def redraw_zero_parameters(model: nn.Module, seed: int = 0) -> list[str]:
    """Fills every all-zero floating parameter with small seeded noise; returns their names.

    Zero-initialised layers (a ViT's classifier, the last BN scale of timm's residual blocks) make a
    branch output exactly zero, so an equivalence check through them would pass whatever the pruning
    did to the layers before them. Only for checking: the model's function changes.
    """
    g = torch.Generator().manual_seed(seed)
    names = []
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.is_floating_point() and p.numel() > 0 and not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=g).to(p))
                names.append(n)
    return names


def _run_recording(model: nn.Module, example_inputs: Any, modules: tuple[str, ...]) -> tuple[Any, dict]:
    """The output of one forward, and the outputs of the named submodules (a list per module, one per call)."""
    inner: dict[str, list] = {n: [] for n in modules}
    named = dict(model.named_modules())
    handles = [named[n].register_forward_hook(lambda _m, _a, o, n=n: inner[n].append(o)) for n in modules if n in named]
    try:
        return run_forward(model, example_inputs), inner
    finally:
        for h in handles:
            h.remove()


def compare_models(reference: nn.Module, model: nn.Module, example_inputs: Any,
                   compare_at: tuple[str, ...] = ()) -> tuple[float, str | None, Any]:
    """``(difference, where, pruned output)`` of the two models' outputs, leaf by leaf.

    ``compare_at`` names submodules before a discontinuous post-processing (a detector's heads before score
    thresholds, top-k and NMS, where float noise of 1e-7 can swap two near-tied boxes): when the final outputs
    differ but those submodules' outputs agree within the tolerance, the networks are equivalent and the
    difference is reported at them, with the post-processed leaf named."""
    ref_out, ref_inner = _run_recording(reference, example_inputs, compare_at)
    out, inner = _run_recording(model, example_inputs, compare_at)
    diff, where = compare_leaves(ref_out, out)
    if diff > TOLERANCE and compare_at:
        inner_diff, inner_where = compare_leaves(ref_inner, inner)
        if inner_diff <= TOLERANCE:
            return inner_diff, (f"{inner_where} (the post-processed output differs at {where}: near-tied "
                                f"detections reordered; the heads' outputs agree)"), out
    return diff, where, out


def check_model(name: str, model: nn.Module, example_inputs: Any, config: StructuredConfig | None = None,
                latency: bool = True, repeats: int = 10, redraw_zeros: bool = True,
                compare_at: tuple[str, ...] = ()) -> CheckReport:
    """Prunes ``model`` in place with ``config`` and checks it; errors end up in the report.

    With ``redraw_zeros`` all-zero parameters are first re-drawn (:func:`redraw_zero_parameters`), so
    the equivalence check sees every path; their names are in ``report.redrawn``. ``compare_at``: see
    :func:`compare_models`.
    """
    config = config or StructuredConfig(sparsity=0.5)
    if config.sparsity is None:
        raise ConfigError("check_model removes a fraction of units: StructuredConfig(sparsity=...), not a budget")
    check_needs(config.importance, None, kind="group")
    rep = CheckReport(model=name, ratio=config.sparsity, exact_only=config.exact_only)
    graph = None
    try:
        model.eval()
        if redraw_zeros:
            rep.redrawn = redraw_zero_parameters(model)
        rep.inputs = describe_inputs(example_inputs)
        rep.params_before = count_params(model).total
        rep.macs_before = _unpruned_macs(model, example_inputs)
        branch = control_flow_difference(model, example_inputs)
        if branch is not None:
            raise PruningError(branch)
        if latency:
            rep.latency_before_ms = time_forward(model, example_inputs, repeats)
        reference = copy.deepcopy(model)
        t0 = time.perf_counter()
        graph = DependencyGraph.build(model, example_inputs, exclude=config.exclude)
        rep.capture_seconds = time.perf_counter() - t0
        rep.groups = len(graph.groups)
        rep.pinned_by = [r for r, _ in sorted(graph.pin_reasons.items(), key=lambda kv: -kv[1])[:5]]
        if not graph.prunable_groups(config.exact_only):
            raise_no_groups(graph, config.exact_only)
        plan = select_units(graph, config)
        t1 = time.perf_counter()
        members = snapshot_members(graph, plan)  # for the reference, not timed
        t2 = time.perf_counter()
        rep.skipped = prune_with_fallback(graph, plan)
        rep.seconds = (t1 - t0) + (time.perf_counter() - t2)
        plan = {k: v for k, v in plan.items() if k not in rep.skipped}
        zero_members(members, plan, reference)
        rep.groups_pruned = len(plan)
        rep.units_removed = int(sum(len(v) for v in plan.values()))
        diff, rep.worst_output, out = compare_models(reference, model, example_inputs, compare_at)
        rep.max_rel_diff = diff
        rep.equivalent = diff <= TOLERANCE
        rep.params_after = count_params(model).total
        rep.macs_after = _macs(model, example_inputs)
        if latency:
            rep.latency_after_ms = time_forward(model, example_inputs, repeats)
        # Groups through a norm or mean (exact_only=False) change outputs even when zeroed: then only the
        # structure is checked (same output shapes, finite values), not equivalence.
        same_shapes = diff < float("inf") and all(
            torch.isfinite(t).all() for t in iter_tensors(out) if t.is_floating_point())
        rep.ok = rep.units_removed > 0 and (rep.equivalent if config.exact_only else same_shapes)
        if config.exact_only and not rep.equivalent:
            rep.error = (f"pruned output differs from the zeroed reference by {diff:.3g} (relative) at "
                         f"{rep.worst_output}")
        elif not same_shapes:
            rep.error = "pruned model's outputs changed shape or hold non-finite values"
    except PrunekitError as e:
        rep.error = f"{type(e).__name__}: {e}"
    except Exception as e:  # a bug of prunekit's, not the user's: still one line naming where it happened
        rep.error = (f"internal error in {_where(e, model)}: {_first_line(e)} (please report it with the "
                     f"model name)")
    if graph is not None:
        rep.shape_only_fallbacks, rep.fallback_reasons = graph.shape_only_fallbacks, list(graph.fallback_reasons)
    return rep
