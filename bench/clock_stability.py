"""Wall time vs CPU time of a forward on a busy machine, and the allocation each one's table chooses.

For each condition (0, 1, 2 busy-loop processes started beside the timing, on top of whatever else
runs), times the dense resnet_mini (MNIST shapes, inference export of the 2× recipe) and one variant
with half of a group's channels removed, alternately (``prunekit.measure.compare_latency``, one
thread), and records per model the median and fastest wall time and the median single-thread CPU
time of a forward. Then measures the recipe's latency table with each clock and allocates the 2×
MAC budget from it (fixed seeded sensitivity curves, the recipe's limits and μ), so a changed
architecture shows as changed counts.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/clock_stability.py --sessions 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import render_footer, write_results  # noqa: E402

from prunekit.allocation import Budget, allocate  # noqa: E402
from prunekit.allocation.latency import measure_latency_table  # noqa: E402
from prunekit.allocation.strategies import allowed_steps  # noqa: E402
from prunekit.data import load_dataset  # noqa: E402
from prunekit.export import prepare_inference  # noqa: E402
from prunekit.graph import DependencyGraph  # noqa: E402
from prunekit.measure import compare_latency  # noqa: E402
from prunekit.measure.threads import using  # noqa: E402
from prunekit.models import build_model  # noqa: E402
from prunekit.pipeline import load_recipe  # noqa: E402
from prunekit.sensitivity import Curve, Sensitivity  # noqa: E402
from prunekit.structured import prune_groups  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "structured-resnet-mnist.yaml"


@contextmanager
def busy_loops(n: int):
    """``n`` pure-Python busy loops (each keeps one core runnable) for the length of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def sensitivity(graph: DependencyGraph, seed: int = 0) -> Sensitivity:
    rng = np.random.default_rng(seed)
    ratios = [0.1, 0.25, 0.4, 0.55, 0.7, 0.85]
    return Sensitivity("taylor", 0.9, 0.0, {
        g.name: Curve(g.name, g.size, ratios, [0.9] * 6, list(np.cumsum(rng.exponential(rng.choice([0.01, 0.1]), 6))))
        for g in graph.prunable_groups()})


def pair_timings(graph: DependencyGraph, export, batch: int, repeats: int) -> dict:
    variant = __import__("copy").deepcopy(graph)
    group = "layers.3.conv2" if any(g.name == "layers.3.conv2" for g in graph.prunable_groups()) else \
        graph.prunable_groups()[0].name
    free = np.flatnonzero(~variant.group(group).pinned)
    prune_groups(variant, {group: free[: len(free) // 2]})
    models = [prepare_inference(g.model, export) for g in (graph, variant)]
    with using(1):
        lat = compare_latency(models, graph.args[0][:1], batch=batch, warmup=2, repeats=repeats,
                              memory_format=export.memory_format)
    return {name: {"wall_median_ms": t.median_ms, "wall_min_ms": t.min_ms, "cpu_median_ms": t.thread_cpu_ms,
                   "repeats": t.repeats, "load_avg": t.load_avg} for name, t in zip(("dense", "variant"), lat,
                                                                                    strict=True)}


def allocation_with(graph, cfg, sens, clock: str) -> dict:
    steps = {g.name: [int(n) for n in allowed_steps(g, cfg)] for g in graph.prunable_groups()}
    t0 = time.perf_counter()
    table = measure_latency_table(graph, steps, cfg.latency_batch, cfg.latency_repeats, cfg.latency_export,
                                  clock=clock)
    seconds = time.perf_counter() - t0
    alloc = allocate(graph, Budget(macs_kept=0.5), cfg, "l2", sensitivity=sens, latency_table=table)
    return {"counts": {g: int(n) for g, n in alloc.to_dict()["removed"].items()}, "dense_ms": table.dense_ms,
            "table": table.to_dict()["measured"], "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--table-repeats", type=int, default=3)
    ap.add_argument("--name", default="clock_stability")
    ap.add_argument("--note", action="append", default=[], help="a note rendered with the results (repeatable)")
    args = ap.parse_args()
    r = load_recipe(RECIPE)
    data = load_dataset(r.data.name)
    torch.manual_seed(0)
    graph = DependencyGraph.build(build_model(r.model.name, data.input_shape, data.num_classes).eval(),
                                  data.x_train[:1])
    inf = r.measure.inference
    cfg = replace(r.prune.options.allocation_config(0, inf), latency_batch=args.batch,
                  latency_repeats=args.table_repeats, latency_passes=1)
    sens = sensitivity(graph)
    steps = sum(len(allowed_steps(g, cfg)) for g in graph.prunable_groups())
    rows = []
    for session in range(args.sessions):
        for n in args.loops:
            with busy_loops(n):
                row = {"session": session, "busy_loops": n, "load_before": os.getloadavg()[0],
                       "pair": pair_timings(graph, inf, args.batch, args.repeats),
                       "allocation": {c: allocation_with(graph, cfg, sens, c) for c in ("cpu", "wall")}}
            rows.append(row)
            print(n, row["pair"], {c: row["allocation"][c]["dense_ms"] for c in ("cpu", "wall")}, flush=True)
    write_results(args.name, {"name": args.name, "notes": args.note, "batch": args.batch,
                              "repeats": args.repeats, "table_repeats": args.table_repeats, "steps": steps,
                              "threads": 1, "rows": rows, "summary": summary(rows, args.loops)}, render)


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / min(values)


def summary(rows: list[dict], loops: list[int]) -> dict:
    out = {}
    quiet = [r for r in rows if r["busy_loops"] == min(loops)]
    for n in loops:
        these = [r for r in rows if r["busy_loops"] == n]
        entry = {}
        for m in ("wall_median_ms", "wall_min_ms", "cpu_median_ms"):
            entry[m] = statistics.median(r["pair"]["dense"][m] for r in these)
            base = statistics.median(r["pair"]["dense"][m] for r in quiet)
            entry[f"{m}_vs_quiet"] = entry[m] / base
            entry[f"{m}_ratio"] = statistics.median(r["pair"]["variant"][m] / r["pair"]["dense"][m] for r in these)
        for c in ("cpu", "wall"):
            ref = quiet[0]["allocation"][c]["counts"]
            entry[f"{c}_same_counts"] = sum(r["allocation"][c]["counts"] == ref for r in these)
            entry[f"{c}_table_dense_ms"] = [round(r["allocation"][c]["dense_ms"], 2) for r in these]
        entry["runs"] = len(these)
        out[str(n)] = entry
    return out


def render(res: dict) -> str:
    lines = [f"# {res['name']}: wall vs CPU time of a forward on a busy machine", "",
             "resnet_mini (MNIST 28×28), inference export (BN folded, channels_last), "
             f"batch {res['batch']}, 1 thread; dense and a variant (half of one group's channels removed) timed "
             f"alternately, {res['repeats']} runs each. Busy loops are extra pure-Python processes on the 2 cores, on "
             f"top of the machine's own load (load before each condition in the JSON).", "",
             "| busy loops | runs | dense wall median ms (× quiet) | dense wall min ms (× quiet) | dense CPU median ms "
             "(× quiet) | variant/dense wall median | variant/dense CPU median | allocations = first quiet "
             "(CPU table) | (wall table) |", "|---|---|---|---|---|---|---|---|---|"]
    for n, e in res["summary"].items():
        lines.append(f"| {n} | {e['runs']} | {e['wall_median_ms']:.1f} ({e['wall_median_ms_vs_quiet']:.2f}×) | "
                     f"{e['wall_min_ms']:.1f} ({e['wall_min_ms_vs_quiet']:.2f}×) | {e['cpu_median_ms']:.1f} "
                     f"({e['cpu_median_ms_vs_quiet']:.2f}×) | {e['wall_median_ms_ratio']:.3f} | "
                     f"{e['cpu_median_ms_ratio']:.3f} | {e['cpu_same_counts']}/{e['runs']} | "
                     f"{e['wall_same_counts']}/{e['runs']} |")
    lines += ["", f"Latency tables: {res['steps']} steps, {res['table_repeats']} rounds each, the recipe's limits; "
              "allocation of the 2× MAC budget by the recipe's μ blend from fixed seeded sensitivity curves."]
    return "\n".join(lines) + "\n" + render_footer(res)


if __name__ == "__main__":
    main()
