"""Measured CPU latency at every operating point of the criteria benchmark (issue 4, part 6).

Latency depends on the architecture only, so no model is retrained: every point of
``bench/results/criteria_<config>*.json`` (merged as ``bench/criteria.py --report`` merges them) is
rebuilt from a fresh ``build_model`` by removing the same number of units per dependency group (which
units does not matter for timing), its MACs and parameters are checked against the point's, identical
architectures are timed once, and each reduction target's architectures are timed together with the
dense model by :func:`prunekit.measure.compare_latency` (one forward of each model in turn, repeated),
so load changes hit all of them alike. Speed-up = dense median ms / pruned median ms of those
interleaved runs; a row's mean ± std is over the seeds' points (one architecture per seed).

Where the points store ``ratios`` (the fraction of each group removed: the resnet runs) the kept widths
follow from them; the older cnn1d run stored MACs and parameters only, and its four widths are the
solution of MACs(widths) = macs, params(widths) = params (:func:`cnn1d_widths`; points with more
than one solution are left out and listed).

Modes, applied to the dense and the pruned model alike: ``eager`` (the model as trained, NCHW,
``torch.no_grad``) and ``export`` (``prunekit.export.prepare_inference`` as in the shipped structured
recipe: BatchNorm folded, channels_last for the 2-D resnet; channels_last does not exist for the 1-D
cnn1d, so there it is BatchNorm folding only; ``torch.inference_mode``).

    OMP_NUM_THREADS=1 .venv/bin/python bench/criteria_latency.py    # both configs, ~25 min on 1 core at load 4
    OMP_NUM_THREADS=1 .venv/bin/python bench/criteria_latency.py --configs cnn1d --repeats 5 --out /tmp/x
    .venv/bin/python bench/render.py                             # criteria_latency.md from the JSON only
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from _common import render_footer, write_json  # bench/ is sys.path[0] when run as a script
from _criteria_report import _merge, latency_summary

from prunekit.data import load_dataset
from prunekit.export import InferenceConfig, prepare_inference
from prunekit.graph import DependencyGraph
from prunekit.measure import compare_latency, count_macs, count_params
from prunekit.models import build_model
from prunekit.structured import prune_groups

RESULTS = Path(__file__).parent / "results"
CONFIGS = {  # criteria.py config name -> what is timed; repeats chosen so both fit in ~25 min at load 4
    "cnn1d": dict(batch=256, repeats=50, export=InferenceConfig(fold_bn=True)),
    "resnet": dict(batch=256, repeats=25, export=InferenceConfig(fold_bn=True, channels_last=True)),
}
MACS_TOLERANCE = 0.005


def cnn1d_widths(macs: int, params: int) -> list[tuple[int, int, int, int]]:
    """Every (conv0, conv3, conv6, fc10) width of ``cnn1d`` on MNIST-1D (input 1×40, 10 classes) with
    these dense MACs and parameters. Conv lengths 40, 20, 10; convs and Linears have biases, BatchNorms
    2 parameters per channel; MACs as ``count_macs`` counts them (weights only)."""
    m, p = _cnn1d_costs()
    return [tuple(int(v) + 1 for v in i) for i in np.argwhere((m == macs) & (p == params))]


@functools.cache
def _cnn1d_costs() -> tuple[np.ndarray, np.ndarray]:
    c0 = np.arange(1, 33)[:, None, None, None]
    c1 = np.arange(1, 65)[None, :, None, None]
    c2 = np.arange(1, 65)[None, None, :, None]
    h = np.arange(1, 129)[None, None, None, :]
    m = 40 * 5 * c0 + 20 * 5 * c0 * c1 + 10 * 3 * c1 * c2 + 10 * c2 * h + 10 * h
    p = (8 * c0) + (5 * c0 * c1 + 3 * c1) + (3 * c1 * c2 + 3 * c2) + (10 * c2 * h + h) + (10 * h + 10)
    return m, p


def _removed(point: dict, sizes: dict[str, int], config: str) -> dict[str, int] | None:
    """Units removed per group for one point, or None when its architecture is ambiguous."""
    if "ratios" in point:
        return {g: round(r * sizes[g]) for g, r in point["ratios"].items()}
    if config != "cnn1d":
        raise ValueError(f"point {point['criterion']}/{point['strategy']} has no ratios; only cnn1d can be solved")
    sol = cnn1d_widths(point["macs"], point["params"])
    if len(sol) != 1:
        return None
    return {g: sizes[g] - k for g, k in zip(sizes, sol[0], strict=True)}


def _build(model: str, data, removed: dict[str, int] | None):
    net = build_model(model, data.input_shape, data.num_classes).eval()
    if removed:
        graph = DependencyGraph.build(net, data.x_test[:1])
        prune_groups(graph, {g: list(range(n)) for g, n in removed.items() if n})
    return net.eval()


def architectures(config: str, run: dict) -> dict:
    """Unique pruned architectures per reduction target, each checked against its points' MACs/params."""
    data = load_dataset(run["data"])
    dense = _build(run["model"], data, None)
    x1 = data.x_test[:1]
    sizes = {g.name: g.size for g in DependencyGraph.build(dense, x1).prunable_groups()}
    archs: dict = {}
    ambiguous = []
    for p in run["points"]:
        removed = _removed(p, sizes, config)
        if removed is None:
            ambiguous.append({k: p[k] for k in ("criterion", "strategy", "reduction_target", "seed", "macs", "params")})
            continue
        key = (p["reduction_target"], tuple(sorted(removed.items())))
        archs.setdefault(key, {"reduction_target": p["reduction_target"], "removed": removed, "points": []})
        archs[key]["points"].append(p)
    for a in archs.values():
        net = _build(run["model"], data, a["removed"])
        macs, params = int(count_macs(net, x1).dense), count_params(net).total
        for p in a["points"]:  # the correctness check: the rebuilt architecture is the one that was measured
            assert abs(macs - p["macs"]) <= MACS_TOLERANCE * p["macs"], (a["removed"], macs, p["macs"])
        a.update(macs=macs, params=params, model=net, macs_match_exact=all(p["macs"] == macs for p in a["points"]),
                 params_match_exact=all(p["params"] == params for p in a["points"]))
    return {"data": data, "dense": dense, "dense_macs": int(count_macs(dense, x1).dense),
            "archs": list(archs.values()), "ambiguous": ambiguous}


def time_target(dense, archs: list[dict], x1, batch: int, repeats: int, export: InferenceConfig | None) -> None:
    """Times dense + ``archs`` interleaved; stores dense/pruned medians and speed-ups in each arch dict."""
    models = [dense, *(a["model"] for a in archs)]
    mode = "eager" if export is None else "export"
    if export is not None:
        models = [prepare_inference(m, export) for m in models]
    ctx = torch.no_grad if export is None else torch.inference_mode
    fmt = torch.contiguous_format if export is None else export.memory_format
    with ctx():
        lat = compare_latency(models, x1, batch=batch, warmup=1, repeats=repeats, memory_format=fmt)
    for a, t in zip(archs, lat[1:], strict=True):
        a.setdefault("timing", {})[mode] = {
            "dense_ms": lat[0].median_ms, "pruned_ms": t.median_ms, "speedup": lat[0].median_ms / t.median_ms,
            "speedup_p10": lat[0].p10_ms / t.p10_ms, "loadavg_end": os.getloadavg()[0]}


def rows_for(archs: list[dict], dense_macs: int) -> list[dict]:
    """Mean ± std over seeds per (criterion, strategy, target), each seed's point timed as its architecture."""
    by = defaultdict(list)
    for a in archs:
        for p in a["points"]:
            by[(p["criterion"], p["strategy"], p["reduction_target"])].append((p, a))
    rows = []
    for (crit, strat, red), pa in sorted(by.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        row = {"criterion": crit, "strategy": strat, "reduction_target": red, "seeds": [p["seed"] for p, _ in pa],
               "architectures": len({id(a) for _, a in pa}),
               "macs_reduction": statistics.mean(dense_macs / a["macs"] for _, a in pa)}
        for mode in pa[0][1]["timing"]:
            sp = [a["timing"][mode]["speedup"] for _, a in pa]
            ms = [a["timing"][mode]["pruned_ms"] for _, a in pa]
            row[mode] = {"speedup_mean": statistics.mean(sp), "speedup_std": statistics.stdev(sp) if len(sp) > 1
                         else 0.0, "speedup_min": min(sp), "speedup_max": max(sp),
                         "pruned_ms_mean": statistics.mean(ms), "pruned_ms_std": statistics.stdev(ms)
                         if len(ms) > 1 else 0.0, "dense_ms": statistics.mean(a["timing"][mode]["dense_ms"]
                                                                           for _, a in pa)}
        rows.append(row)
    return rows


def run_config(name: str, args, result: dict, out: Path) -> None:
    cfg = CONFIGS[name]
    run = _merge(sorted(RESULTS.glob(f"criteria_{name}*.json")))
    reds = set(args.reductions or {p["reduction_target"] for p in run["points"]})
    run["points"] = [p for p in run["points"] if p["reduction_target"] in reds]
    built = architectures(name, run)
    batch, repeats = args.batch or cfg["batch"], args.repeats or cfg["repeats"]
    modes = {"eager": None, "export": cfg["export"]}
    x1 = built["data"].x_test[:1]
    entry = {"model": run["model"], "data": run["data"], "batch": batch, "repeats": repeats, "warmup": 1,
             "export": cfg["export"].describe(), "dense_macs": built["dense_macs"],
             "points": len(run["points"]), "unique_architectures": len(built["archs"]),
             "ambiguous_points": built["ambiguous"], "loadavg_start": os.getloadavg()}
    print(f"[{name}] {len(run['points'])} points, {len(built['archs'])} architectures, "
          f"{len(built['ambiguous'])} ambiguous", flush=True)
    for mode in args.modes:
        for red in sorted({a["reduction_target"] for a in built["archs"]}):
            group = [a for a in built["archs"] if a["reduction_target"] == red]
            t0 = time.time()
            time_target(built["dense"], group, x1, batch, repeats, modes[mode])
            sp = [a["timing"][mode]["speedup"] for a in group]
            print(f"[{name}] {mode} {red:g}×: {len(group)} archs, dense {group[0]['timing'][mode]['dense_ms']:.1f} ms,"
                  f" speed-up {min(sp):.2f}–{max(sp):.2f}× ({time.time() - t0:.0f} s, load "
                  f"{os.getloadavg()[0]:.2f})", flush=True)
    entry["loadavg_end"] = os.getloadavg()
    entry["architectures"] = [{k: a[k] for k in ("reduction_target", "removed", "macs", "params", "macs_match_exact",
                                                  "params_match_exact", "timing")}
                              | {"macs_reduction": built["dense_macs"] / a["macs"],
                                 "points": [f"{p['criterion']}/{p['strategy']}/s{p['seed']}" for p in a["points"]]}
                              for a in built["archs"]]
    entry["rows"] = rows_for(built["archs"], built["dense_macs"])
    result["configs"][name] = entry
    write_json(out, result)


def render(result: dict) -> str:
    """criteria_latency.md from its JSON."""
    md = ["# Measured latency at the criteria benchmark's operating points", "",
          f"Generated by `{result['command']}` ({result['threads']} torch thread; load average "
          f"{result['loadavg_start'][0]:.2f} at start, {result['loadavg_end'][0]:.2f} at the end, 2 shared cores). "
          "Each point's architecture is rebuilt from a fresh model with the point's per-group unit counts (MACs "
          "checked against the point), identical architectures are timed once, and each reduction target's "
          "architectures are timed interleaved with the dense model (`prunekit.measure.compare_latency`). Speed-up "
          "= dense median / pruned median; mean ± std over the seeds' points. `export` = "
          "`prunekit.export.prepare_inference` applied to dense and pruned alike.", "",
          *latency_summary(result), ""]
    for c in result["configs"].values():
        modes = [m for m in ("eager", "export") if c["rows"] and m in c["rows"][0]]
        md += [f"## {c['model']} on {c['data']}", "",
               f"Batch {c['batch']}, {c['repeats']} interleaved repeats after 1 warm-up; export: {c['export']}; "
               f"{c['points']} points, {c['unique_architectures']} distinct architectures; load average "
               f"{c['loadavg_start'][0]:.2f} → {c['loadavg_end'][0]:.2f}."
               + (" Left out (two architectures fit MACs and params): "
                  + ", ".join(f"{a['criterion']}/{a['strategy']} {a['reduction_target']:g}× seed {a['seed']}"
                              for a in c["ambiguous_points"]) if c["ambiguous_points"] else ""), "",
               "| MACs target | criterion | strategy | seeds | archs | MAC reduction | "
               + " | ".join(f"speed-up {m} | pruned ms {m}" for m in modes) + " |",
               "|" + "---|" * (6 + 2 * len(modes))]
        for r in c["rows"]:
            cells = [f"{r['reduction_target']:g}×", r["criterion"], r["strategy"], str(len(r["seeds"])),
                     str(r["architectures"]), f"{r['macs_reduction']:.2f}×"]
            for m in modes:
                cells += [f"{r[m]['speedup_mean']:.2f} ± {r[m]['speedup_std']:.2f}×",
                          f"{r[m]['pruned_ms_mean']:.1f} ± {r[m]['pruned_ms_std']:.1f}"]
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
    return "\n".join(md) + render_footer(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--modes", nargs="+", default=["eager", "export"], choices=["eager", "export"])
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default: per config)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: 256)")
    ap.add_argument("--reductions", type=float, nargs="+", default=None, help="only these MAC targets")
    ap.add_argument("--out", default=str(RESULTS / "criteria_latency"), help="path without .json/.md")
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_num_threads(1)
    result = {"command": "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "unset") + " .venv/bin/python "
              + shlex.join(["bench/criteria_latency.py", *sys.argv[1:]]),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "loadavg_start": os.getloadavg(),
              "configs": {}}
    t0 = time.time()
    for name in args.configs:
        run_config(name, args, result, out.with_suffix(".json"))
    result["loadavg_end"] = os.getloadavg()
    result["seconds"] = round(time.time() - t0)
    result = write_json(out.with_suffix(".json"), result)
    out.with_suffix(".md").write_text(render(result))
    print(f"done in {result['seconds']} s")


if __name__ == "__main__":
    main()
