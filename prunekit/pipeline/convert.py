"""Version-1 recipes → version 2 (``prunekit convert-recipe OLD NEW``; :func:`parse_recipe` does it on load).

What changes:

- ``prune.schedule`` → ``prune.method``; ``criterion`` → ``importance``; ``target`` → ``sparsity`` (removed);
  ``scope`` → ``allocation`` (``layer`` → ``uniform``); ``gradual_start/end`` → ``start/end``; the ``lottery``
  mapping is flattened into ``prune``; options the old runner ignored for the schedule are dropped.
- ``structured:`` → ``prune: {method: structured}``; ``criterion`` → ``importance``, ``strategy`` →
  ``allocation``, ``target: {macs: 0.5}`` → ``budget: {macs_kept: 0.5}``, ``allocation_latency_weight`` →
  ``latency_weight``.
- ``finetune`` + ``recovery`` → ``recover``; ``inference`` → ``measure.inference``; ``regularize`` →
  ``prune.regularize`` (``bn_l1`` → ``method: slimming``).

Keys the converter does not know are carried over unchanged, so the version-2 validation names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from prunekit.errors import RecipeError

__all__ = ["convert_v1", "convert_file"]

_STEPS = ("iterative", "gradual", "lottery")
_MASK_KEYS = {"criterion": "importance", "target": "sparsity", "ratios": "ratios", "threshold": "threshold",
              "exclude": "exclude", "include_bias": "include_bias", "granularity": "granularity",
              "remove_channels": "remove_channels"}
_STRUCTURED_KEYS = {"criterion": "importance", "strategy": "allocation", "allocation_latency_weight": "latency_weight"}
_BUDGET_KEYS = {"macs": "macs_kept", "params": "params_kept"}
_DATA_CRITERIA = ("gradient", "taylor", "hessian", "loss_change", "apoz", "mean_activation", "mi", "bn_folded")
#: version-1 criterion names whose formula has another name in the one importance registry: the masks' bn_scale
#: was the BN-folded magnitude (now bn_folded; bn_scale is |γ|), the structured lp (p = 2) is l2
_MASK_RENAMED = {"bn_scale": "bn_folded"}
_GROUP_RENAMED = {"lp": "l2"}


def _mask_prune(p: dict[str, Any], regularize: dict[str, Any] | None) -> dict[str, Any]:
    p = dict(p)
    method = p.pop("schedule", "iterative")
    out: dict[str, Any] = {"method": method}
    lottery = p.pop("lottery", None)
    steps = p.pop("steps", None)
    start, end = p.pop("gradual_start", None), p.pop("gradual_end", None)
    iterations = p.pop("iterations", None)
    recal = p.pop("recalibrate_bn", 0)
    cal = p.pop("calibration_samples", None)
    nm = p.pop("nm", None)
    scope = p.pop("scope", None)
    for old, new in _MASK_KEYS.items():
        if old in p:
            out[new] = p.pop(old)
    out.update(p)  # unknown keys: the validator names them
    if scope is not None:
        out["allocation"] = "uniform" if scope == "layer" else scope
    if "importance" in out:
        out["importance"] = _MASK_RENAMED.get(out["importance"], out["importance"])
    if out.get("granularity") == "element":
        del out["granularity"]
    if out.get("granularity") == "nm" and nm is not None:
        out["nm"] = list(nm)
    if steps is not None and method in _STEPS:
        out["steps"] = steps
    if method == "gradual":
        out.update({k: v for k, v in (("start", start), ("end", end)) if v is not None})
    if method == "lottery" and isinstance(lottery, dict):
        out.update(lottery)
    if method == "at_init" and iterations is not None:
        out["iterations"] = iterations
    if recal:
        out["recalibrate_bn"] = recal
    if cal is not None and out.get("importance", "l1") in _DATA_CRITERIA:
        out["calibration_samples"] = cal
    if method == "soft_filter":  # the old runner pruned filters by L2, layer by layer, whatever was set
        out = {k: v for k, v in out.items() if k in ("method", "sparsity", "exclude", "remove_channels")}
    kind = (regularize or {}).get("kind", "none")
    if kind == "bn_l1":
        out = {"method": "slimming", "sparsity": out.get("sparsity", 0.9)}
        if "strength" in regularize:
            out["strength"] = regularize["strength"]
    elif kind != "none":
        out["regularize"] = {k: v for k, v in regularize.items()}
    return out


def _structured_prune(s: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"method": "structured"}
    for k, v in s.items():
        if k == "target" and isinstance(v, dict):
            out["budget"] = {_BUDGET_KEYS.get(bk, bk): bv for bk, bv in v.items()}
        elif k == "criterion":
            out["importance"] = _GROUP_RENAMED.get(v, v)
        else:
            out[_STRUCTURED_KEYS.get(k, k)] = v
    return out


def convert_v1(raw: dict[str, Any], source: str = "recipe") -> dict[str, Any]:
    """The version-2 form of a version-1 recipe (a plain dict; validate it with :func:`parse_recipe`)."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    raw.pop("version", None)
    out: dict[str, Any] = {"version": 2}
    for key in ("name", "seed", "data", "model", "train"):
        if key in raw:
            out[key] = raw.pop(key)
    structured = raw.pop("structured", None)
    prune, regularize = raw.pop("prune", {}), raw.pop("regularize", None)
    if structured is not None:
        if not isinstance(structured, dict):
            raise RecipeError(f"{source}: structured: expected a mapping, got {structured!r}")
        out["prune"] = _structured_prune(structured)
    elif isinstance(prune, dict):
        out["prune"] = _mask_prune(prune, regularize if isinstance(regularize, dict) else None)
    else:
        out["prune"] = prune
    finetune, recovery = raw.pop("finetune", None), raw.pop("recovery", None)
    if out["prune"].get("method") not in ("lottery", "at_init"):  # those retrained with `train`, ignoring these
        default = {"epochs": 3, "lr": 0.005 if structured is not None else 0.01}
        recover = dict(finetune) if isinstance(finetune, dict) else default
        if isinstance(recovery, dict):
            recover.update({k: v for k, v in recovery.items() if k != "distill" or recovery.get("method") == "distill"})
        out["recover"] = recover
    measure = dict(raw.pop("measure", {}) or {})
    if "inference" in raw:
        measure["inference"] = raw.pop("inference")
    if measure:
        out["measure"] = measure
    out.update(raw)  # unknown top-level keys: the validator names them
    return out


def convert_file(old: str | Path, new: str | Path) -> dict[str, Any]:
    """Writes the version-2 form of recipe file ``old`` to ``new`` (validated first); keeps the leading comments."""
    from prunekit.pipeline.schema import parse_recipe, read_yaml

    raw = read_yaml(old)
    if isinstance(raw, dict) and raw.get("version", 1) != 1:
        raise RecipeError(f"{old}: version {raw.get('version')} is not a version-1 recipe; nothing to convert")
    converted = convert_v1(raw, str(old))
    parse_recipe(converted, str(old), notice=None)  # refuse to write something that does not load
    header = []
    for line in Path(old).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = yaml.safe_dump(converted, sort_keys=False, default_flow_style=None, width=110)
    Path(new).write_text("\n".join(header + [text]) if header else text, encoding="utf-8")
    return converted
