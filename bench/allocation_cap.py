"""Does bounding the sensitivity greedy's deviation from uniform help? (issue 4: allocation vs uniform)

Runs the criteria benchmark's setup (bench/criteria.py: same dense models, calibration, sensitivity
curves and fine-tune budget) for taylor scores with these allocations side by side: uniform, the free
sensitivity greedy, the greedy with ``max_deviation`` 0.15 and 0.3 (no group's ratio strays more
than that from the uniform ratio), and the greedy on curves measured with BatchNorm statistics
re-estimated on 256 training images (``+bn``), free and bounded; at 2×, 3× and 4× fewer MACs, 3 seeds.
Pass ``--combos`` to run a subset (e.g. only the ``+bn`` ones, merged with an earlier file by --report).

    .venv/bin/python bench/allocation_cap.py --config cnn1d     # → results/allocation_cap_cnn1d.json
    .venv/bin/python bench/allocation_cap.py --config resnet --seeds 0
    .venv/bin/python bench/allocation_cap.py --report           # → results/allocation_cap.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from _common import render_footer, render_sources, write_results  # bench/ is sys.path[0] when run as a script
from criteria import CONFIGS, RESULTS, run_config

COMBOS = [("taylor", "uniform"), ("taylor", "sensitivity"), ("taylor", "sensitivity@0.15"),
          ("taylor", "sensitivity@0.3"), ("taylor", "sensitivity+bn"), ("taylor", "sensitivity+bn@0.15")]


def render(result: dict) -> str:
    """allocation_cap.md from allocation_cap.json (which names the per-config files it merges)."""
    lines = ["# Sensitivity allocation with a bounded deviation from uniform", "",
             "Test accuracy (%) after the criteria benchmark's 1-epoch fine-tune, mean ± std over seeds; taylor "
             "scores; `sensitivity@d` = greedy on the sensitivity curves with no group's ratio more than d from "
             "the uniform allocation's (`AllocationConfig.max_deviation`). Δ = mean difference to uniform over "
             "the same seeds (pt); spread = the larger of the two stds. Produced by `bench/allocation_cap.py`.", ""]
    runs: dict[tuple[str, str], dict] = {}  # (model, data) → points merged over files, the later file wins
    for name in result["sources"]:
        run = json.loads((RESULTS / name).read_text())
        merged = runs.setdefault((run["model"], run["data"]), {"model": run["model"], "data": run["data"], "pts": {}})
        for pt in run["points"]:
            merged["pts"][(pt["strategy"], pt["reduction_target"], pt["seed"])] = pt
    for run in runs.values():
        pts = list(run["pts"].values())
        seeds = sorted({p["seed"] for p in pts})
        lines += [f"## {run['model']} on {run['data']} (seeds {seeds})", "",
                  "| MACs reduction | strategy | accuracy | Δ vs uniform (pt) | spread (pt) "
                  "| beats uniform by > spread |",
                  "|---|---|---|---|---|---|"]
        for red in sorted({p["reduction_target"] for p in pts}):
            acc = {s: {p["seed"]: p["accuracy"] for p in pts if p["reduction_target"] == red and p["strategy"] == s}
                   for _, s in COMBOS}
            for _, s in COMBOS:
                a = acc[s]
                if not a:
                    continue
                common = sorted(set(a) & set(acc["uniform"]))
                sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
                delta = statistics.mean(a[k] - acc["uniform"][k] for k in common) if common else float("nan")
                spread = max(sd(list(a.values())), sd(list(acc["uniform"].values())))
                verdict = "–" if s == "uniform" else ("yes" if delta > spread else "no")
                mean, std = 100 * statistics.mean(a.values()), 100 * sd(list(a.values()))
                lines.append(f"| {red:g}× | {s} | {mean:.2f} ± {std:.2f} | {100 * delta:+.2f} | {100 * spread:.2f} "
                             f"| {verdict} |")
        lines.append("")
    return "\n".join(lines) + render_sources(result["sources"]) + render_footer(result)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=sorted(CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--reductions", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    ap.add_argument("--tag", default="")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--combos", nargs="+", help="strategies to run (default: all of COMBOS), e.g. sensitivity+bn")
    args = ap.parse_args()
    if args.report:  # allocation_cap.json names the files (keeping its notes); the page is rendered from it
        old = RESULTS / "allocation_cap.json"
        notes = json.loads(old.read_text()).get("notes", []) if old.exists() else []
        sources = sorted(p.name for p in RESULTS.glob("allocation_cap_*.json"))
        write_results("allocation_cap", {"sources": sources, "notes": notes}, render)
        return
    torch.set_num_threads(1)
    cfg = CONFIGS[args.config]
    cfg["combos"] = [c for c in COMBOS if not args.combos or c[1] in args.combos]
    cfg["latency_batches"] = ()
    run_config(args.config, args.seeds, RESULTS / f"allocation_cap_{args.config}{args.tag}.json",
               reductions=args.reductions, latency_seed=None)


if __name__ == "__main__":
    main()
