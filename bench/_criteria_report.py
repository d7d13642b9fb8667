"""Summarises bench/criteria.py runs: criteria.md, criteria.json and criteria.png (accuracy vs MACs)."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(run: dict) -> list[dict]:
    dense = run["dense"]
    dense_macs = dense[0]["macs"]
    dense_acc = {d["seed"]: d["accuracy"] for d in dense}
    lat0 = next((d["latency_ms"] for d in dense if "latency_ms" in d), {})
    by = defaultdict(list)
    for p in run["points"]:
        by[(p["criterion"], p["strategy"], p["reduction_target"])].append(p)
    rows = []
    for (crit, strat, red), ps in sorted(by.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        acc_m, acc_s = _ms([p["accuracy"] for p in ps])
        drop_m, drop_s = _ms([100 * (dense_acc[p["seed"]] - p["accuracy"]) for p in ps])
        lat = next((p["latency_ms"] for p in ps if "latency_ms" in p), {})
        rows.append({"criterion": crit, "strategy": strat, "reduction_target": red, "seeds": len(ps),
                     "accuracy_mean": acc_m, "accuracy_std": acc_s, "drop_pt_mean": drop_m, "drop_pt_std": drop_s,
                     "macs_fraction": statistics.mean(p["macs"] / dense_macs for p in ps),
                     "params_fraction": statistics.mean(p["params"] / dense[0]["params"] for p in ps),
                     "latency_ms": lat, "speedup": {b: lat0[b] / v for b, v in lat.items() if b in lat0}})
    return rows


def pareto(rows: list[dict]) -> list[dict]:
    """Points not beaten by another with fewer (or equal) MACs and higher mean accuracy."""
    front = [r for r in rows if not any(o["macs_fraction"] <= r["macs_fraction"] and
                                        o["accuracy_mean"] > r["accuracy_mean"] for o in rows if o is not r)]
    return sorted(front, key=lambda r: r["macs_fraction"])


def _comparisons(rows: list[dict]) -> list[str]:
    """Each sensitivity/search row against uniform allocation with the same criterion (else lp/uniform)."""
    idx = {(r["criterion"], r["strategy"], r["reduction_target"]): r for r in rows}
    out = []
    for key in sorted(k for k in idx if k[2] >= 2 and k[1] in ("sensitivity", "search")):
        crit, _, red = key
        base_key = (crit, "uniform", red) if (crit, "uniform", red) in idx else ("lp", "uniform", red)
        if base_key not in idx:
            continue
        r, base = idx[key], idx[base_key]
        diff = 100 * (r["accuracy_mean"] - base["accuracy_mean"])
        spread = 100 * max(r["accuracy_std"], base["accuracy_std"])
        verdict = "**beats**" if diff > spread else "does not beat"
        out.append(f"- {red:g}×: {crit}/{key[1]} {verdict} {base_key[0]}/uniform by more than the seed spread "
                   f"({diff:+.2f} pt vs spread {spread:.2f} pt)")
    return out


def _table(run: dict, rows: list[dict]) -> list[str]:
    batches = list(next((d["latency_ms"] for d in run["dense"] if "latency_ms" in d), {}))
    head = ("| MACs target | criterion | strategy | test acc. (mean ± std) | drop (pt) | MACs kept | params kept | "
            + " | ".join(f"latency b{b} ms (speed-up)" for b in batches) + " |")
    lines = [head, "|" + "---|" * (7 + len(batches))]
    for r in rows:
        lat = " | ".join(f"{r['latency_ms'].get(b, float('nan')):.2f} ({r['speedup'].get(b, float('nan')):.2f}×)"
                         for b in batches)
        lines.append(f"| {r['reduction_target']:g}× | {r['criterion']} | {r['strategy']} | "
                     f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f} | "
                     f"{r['drop_pt_mean']:+.2f} ± {r['drop_pt_std']:.2f} | {r['macs_fraction']:.3f} | "
                     f"{r['params_fraction']:.3f} | {lat} |")
    return lines


def _plot(runs: list[tuple[dict, list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6.5 * len(runs), 4.8), squeeze=False)
    for ax, (run, rows) in zip(axes[0], runs, strict=True):
        strategies = sorted({r["strategy"] for r in rows})
        markers = dict(zip(strategies, "osD^v", strict=False))
        for crit in sorted({r["criterion"] for r in rows}):
            for s in strategies:
                pts = [r for r in rows if r["criterion"] == crit and r["strategy"] == s]
                if pts:
                    ax.errorbar([p["macs_fraction"] for p in pts], [100 * p["accuracy_mean"] for p in pts],
                                yerr=[100 * p["accuracy_std"] for p in pts], fmt=markers[s], ms=4, alpha=0.6,
                                label=f"{crit}/{s}", capsize=2)
        front = pareto(rows)
        ax.plot([r["macs_fraction"] for r in front], [100 * r["accuracy_mean"] for r in front], "k-", lw=1.5,
                label="Pareto front")
        dense = statistics.mean(d["accuracy"] for d in run["dense"])
        ax.axhline(100 * dense, color="grey", ls=":", label="dense")
        ax.set_xlabel("MACs kept (fraction of dense)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{run['model']} / {run['data']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _merge(files: list[Path]) -> dict | None:
    """One config's runs, possibly split over processes by seed, as one run."""
    parts = [json.loads(f.read_text()) for f in files]
    if not parts:
        return None
    run = dict(parts[0])
    run["dense"] = sorted([d for p in parts for d in p["dense"]], key=lambda d: d["seed"])
    run["points"] = [pt for p in parts for pt in p["points"]]
    done = {pt["seed"] for pt in run["points"]}
    run["dense"] = [d for d in run["dense"] if d["seed"] in done]
    return run


NOTES = """## What was run, and how to read it

- Machine: 2 shared CPU cores (load average 8–15 from other jobs during the run), 1 torch thread per
  process; resnet seeds ran as 3 parallel processes. **Latencies are noisy** (the same architecture
  was timed 30–50% apart minutes apart; some speed-ups < 1 are noise): median of 5 runs, seed 0 only.
  `bench/structured_latency.py` re-times a dense/pruned pair interleaved for a fairer ratio.
- MNIST-1D / cnn1d: every criterion except `bn_scale` (the classifier's hidden Linear group has no
  normalisation layer, so `bn_scale` refuses it) × `uniform` and `global`; `sensitivity` with lp,
  gradient and taylor; `search` with lp (population 8, 3 generations, proxy = accuracy of the zeroed
  model on 200 validation images); 5 MAC budgets × 3 seeds.
- Residual CNN / MNIST: a subset (CPU time): random/uniform and lp/uniform (controls), taylor/global,
  gradient/sensitivity (seed 000: gradient sensitivity + 10× lower fine-tune LR), taylor/sensitivity,
  lp/search at 2×. The shared fine-tune budget is deliberately tiny (1 epoch over 640 images = 10
  steps) so that the comparison isolates *what was removed*; with a real fine-tune (3 epochs, the
  shipped recipe `structured-resnet-mnist`) taylor/sensitivity at 2× MACs loses 0.40 pt with channel
  counts in multiples of 8 (1.53× faster at batch 256, interleaved timing) and 0.20 pt without
  (1.28× faster): `structured-resnet-mnist/` and `structured-resnet-mnist-round1/`.
- Every point met its MAC budget within ±2% (column "MACs kept").
"""


def write_report(results: Path, files: dict[str, list[Path]]) -> None:
    runs = [r for r in (_merge(fs) for fs in files.values()) if r is not None]
    summary, md, plotted = {}, ["# Criteria × allocation strategies at MAC budgets", "",
                                "Generated by `bench/criteria.py` (see its docstring); raw per-seed points in "
                                "`criteria_<config>.json`. Accuracy is on the test split after the same "
                                "fine-tuning budget for every point.", ""], []
    for run in runs:
        rows = summarise(run)
        plotted.append((run, rows))
        dense = run["dense"]
        acc_m, acc_s = _ms([d["accuracy"] for d in dense])
        summary[run["config"]] = {"model": run["model"], "data": run["data"], "dense_accuracy_mean": acc_m,
                                  "dense_accuracy_std": acc_s, "dense": dense, "rows": rows,
                                  "pareto": pareto(rows)}
        md += [f"## {run['model']} on {run['data']}", "",
               f"Dense: {100 * acc_m:.2f} ± {100 * acc_s:.2f}% over seeds {[d['seed'] for d in dense]} "
               f"({dense[0]['macs']:,} MACs, {dense[0]['params']:,} params, latency {dense[0].get('latency_ms')} ms "
               f"at batch sizes). Training {run['train']['epochs']} epochs at LR {run['train']['lr']}; fine-tune "
               f"{run['finetune']['epochs']} epoch at LR {run['finetune']['lr']} (10× lower) on "
               f"{run['ft_subset'] or 'all'} training images; calibration {run['calibration']} images; "
               f"sensitivity ratios {run['sensitivity_ratios']}. Latency: seed 0 only, median of 5, 1 thread.",
               "", *_table(run, rows), "", "Pareto front (mean accuracy vs MACs): " +
               ", ".join(f"{r['criterion']}/{r['strategy']}@{r['reduction_target']:g}×" for r in pareto(rows)), "",
               "Allocation vs uniform at ≥ 2×:", "", *_comparisons(rows), ""]
    (results / "criteria.json").write_text(json.dumps(summary, indent=1))
    (results / "criteria.md").write_text("\n".join(md) + "\n![accuracy vs MACs](criteria.png)\n\n" + NOTES)
    if plotted:
        _plot(plotted, results / "criteria.png")
