"""Summarises bench/criteria.py runs: criteria.md, criteria.json and criteria.png (accuracy vs MACs)."""

from __future__ import annotations

import json
import statistics
import textwrap
from collections import defaultdict
from pathlib import Path


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(run: dict, measured: dict | None = None) -> list[dict]:
    """One row per (criterion, strategy, target); ``measured``: this config's entry of criteria_latency.json."""
    dense = run["dense"]
    speed = {(r["criterion"], r["strategy"], r["reduction_target"]): r for r in (measured or {}).get("rows", [])}
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
                     **({"latency_ms": lat, "speedup": {b: lat0[b] / v for b, v in lat.items() if b in lat0}}
                        if SHOW_LATENCY else {}),
                     **({"measured_speedup": {m: {k: v for k, v in speed[(crit, strat, red)][m].items()
                                                  if k.startswith("speedup")} for m in MODES
                                              if m in speed[(crit, strat, red)]},
                         "measured_seeds": len(speed[(crit, strat, red)]["seeds"])}
                        if (crit, strat, red) in speed else {})})
    return rows


def pareto(rows: list[dict]) -> list[dict]:
    """Points not beaten by another with fewer (or equal) MACs and higher mean accuracy."""
    front = [r for r in rows if not any(o["macs_fraction"] <= r["macs_fraction"] and
                                        o["accuracy_mean"] > r["accuracy_mean"] for o in rows if o is not r)]
    return sorted(front, key=lambda r: r["macs_fraction"])


def _comparisons(rows: list[dict], points: list[dict]) -> list[str]:
    """Each sensitivity/search row against uniform allocation with the same criterion (else lp/uniform)."""
    idx = {(r["criterion"], r["strategy"], r["reduction_target"]): r for r in rows}
    acc = {(p["criterion"], p["strategy"], p["reduction_target"], p["seed"]): p["accuracy"] for p in points}
    out = []
    for key in sorted(k for k in idx if k[2] >= 2 and k[1] in ("sensitivity", "search")):
        crit, _, red = key
        # the magnitude baseline: "l2" ("lp" with p = 2 in results measured before the registries were merged)
        base_key = next((k for k in ((crit, "uniform", red), ("l2", "uniform", red), ("lp", "uniform", red))
                         if k in idx), None)
        if base_key is None:
            continue
        r, base = idx[key], idx[base_key]
        diff = 100 * (r["accuracy_mean"] - base["accuracy_mean"])
        spread = 100 * max(r["accuracy_std"], base["accuracy_std"])
        verdict = "**beats**" if diff > spread else "does not beat"
        paired = [100 * (acc[(*key, s)] - acc[(*base_key, s)]) for s in sorted({k[3] for k in acc})
                  if (*key, s) in acc and (*base_key, s) in acc]
        pm, ps = _ms(paired) if paired else (float("nan"), float("nan"))
        out.append(f"- {red:g}×: {crit}/{key[1]} {verdict} {base_key[0]}/uniform by more than the seed spread "
                   f"({100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f} vs "
                   f"{100 * base['accuracy_mean']:.2f} ± {100 * base['accuracy_std']:.2f}: {diff:+.2f} pt vs spread "
                   f"{spread:.2f} pt; paired per seed {pm:+.2f} ± {ps:.2f} pt over {len(paired)} seeds)")
    return out


def _ranks(v: list[float]) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(v):  # ties share their mean rank
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = _ranks(a), _ranks(b)
    try:
        return statistics.correlation(ra, rb)
    except statistics.StatisticsError:  # a constant input
        return float("nan")


def _proxy_check(run: dict) -> list[str]:
    """Does the search's proxy (validation accuracy of the pruned model before fine-tuning, with and without
    re-estimated BN statistics) rank the allocations like the fine-tuned test accuracy does?"""
    pts = [p for p in run["points"] if "val_acc_before_ft" in p]
    if not pts:
        return []
    lines = ["Proxy check: Spearman rank correlation, over all criterion × strategy × seed points at one MAC "
             "target, between the fine-tuned test accuracy and the validation accuracy of the pruned model before "
             "fine-tuning (what the `search` strategy ranks candidates by); mean proxy value in brackets.", "",
             "| MACs target | points | proxy without BN re-estimation | proxy with BN re-estimation (search) |",
             "|---|---|---|---|"]
    for red in sorted({p["reduction_target"] for p in pts}):
        ps = [p for p in pts if p["reduction_target"] == red]
        acc = [p["accuracy"] for p in ps]
        cells = []
        for key in ("val_acc_before_ft", "val_acc_before_ft_bn"):
            v = [p.get(key) for p in ps]
            cells.append("–" if None in v else f"{_spearman(v, acc):+.2f} ({100 * statistics.mean(v):.1f}%)")
        lines.append(f"| {red:g}× | {len(ps)} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]


def _table(run: dict, rows: list[dict], measured: dict | None = None) -> list[str]:
    batches = list(next((d["latency_ms"] for d in run["dense"] if "latency_ms" in d), {})) if SHOW_LATENCY else []
    modes = [m for m in MODES if any(m in r.get("measured_speedup", {}) for r in rows)]
    cols = ["MACs target", "criterion", "strategy", "seeds", "test acc. (mean ± std)", "drop (pt)", "MACs kept",
            "params kept", *(f"latency b{b} ms (speed-up)" for b in batches),
            *(f"speed-up b{measured['batch']} {m}" for m in modes)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r['reduction_target']:g}×", r["criterion"], r["strategy"], str(r["seeds"]),
                 f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}",
                 f"{r['drop_pt_mean']:+.2f} ± {r['drop_pt_std']:.2f}", f"{r['macs_fraction']:.3f}",
                 f"{r['params_fraction']:.3f}",
                 *(f"{r['latency_ms'].get(b, float('nan')):.2f} ({r['speedup'].get(b, float('nan')):.2f}×)"
                   for b in batches),
                 *(_speed_cell(r, m) for m in modes)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


MODES = ("eager", "export")


def _speed_cell(row: dict, mode: str) -> str:
    sp = row.get("measured_speedup", {}).get(mode)
    if sp is None:
        return "–"
    n = row["measured_seeds"]
    return f"{sp['speedup_mean']:.2f} ± {sp['speedup_std']:.2f}×" + (f" ({n} seeds)" if n != row["seeds"] else "")


def latency_summary(result: dict, config: str | None = None) -> list[str]:
    """The figures worth knowing from criteria_latency.json: per strategy the speed-up at 2× fewer MACs
    (range over its architectures; the issue's target is ≥ 1.8× at batch 256 on the residual CNN), and
    how well the MAC reduction predicts the speed-up."""
    out = []
    for name, c in result["configs"].items():
        if config is not None and name != config:
            continue
        archs = c["architectures"]
        for mode in (m for m in MODES if archs and m in archs[0]["timing"]):
            at2 = defaultdict(list)
            for a in (a for a in archs if a["reduction_target"] == 2.0):
                for s in sorted({p.split("/")[1] for p in a["points"]}):
                    at2[s].append(a["timing"][mode]["speedup"])
            per = "; ".join(f"{s} {min(v):.2f}–{max(v):.2f}×"  # the target is for the residual CNN
                            + (f" ({sum(x >= 1.8 for x in v)}/{len(v)} ≥ 1.8×)" if name == "resnet" else "")
                            for s, v in sorted(at2.items()))
            ratio = [a["timing"][mode]["speedup"] / a["macs_reduction"] for a in archs]
            rho = _spearman([a["macs_reduction"] for a in archs], [a["timing"][mode]["speedup"] for a in archs])
            dense_ms = [a["timing"][mode]["dense_ms"] for a in archs]  # one value per timing group
            verdict = ""
            if at2:
                best = max(at2, key=lambda s: statistics.mean(at2[s]))
                verdict = f" Largest mean at 2×: {best} ({statistics.mean(at2[best]):.2f}×)."
            if name == "resnet" and at2:
                met = [s for s, v in sorted(at2.items()) if statistics.mean(v) >= 1.8]
                verdict += (" Issue target (≥ 1.8× at batch 256 for 2× fewer MACs), by the strategy's mean over its "
                           f"architectures: met by {', '.join(met) or 'none'}"
                           + (f"; not by {', '.join(s for s in sorted(at2) if s not in met)}."
                              if len(met) < len(at2) else "."))
            out.append(f"- {c['model']}, {mode} (batch {c['batch']}, dense {min(dense_ms):.1f}–{max(dense_ms):.1f} ms "
                       "over the timing groups, as the load changed): at 2× fewer MACs "
                       f"the distinct architectures of each strategy run {per}.{verdict} Speed-up / MAC reduction "
                       f"over all {len(archs)} architectures (1.5–4× fewer MACs): median "
                       f"{statistics.median(ratio):.2f} (range {min(ratio):.2f}–{max(ratio):.2f}); Spearman "
                       f"ρ(MAC reduction, speed-up) = {rho:+.2f}.")
    return out


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
    run["dense"] = list({d["seed"]: d for p in parts for d in p["dense"]}.values())  # a seed may span files
    run["dense"].sort(key=lambda d: d["seed"])
    run["points"] = list({(pt["criterion"], pt["strategy"], pt["reduction_target"], pt["seed"]): pt
                          for p in parts for pt in p["points"]}.values())
    done = {pt["seed"] for pt in run["points"]}
    run["dense"] = [d for d in run["dense"] if d["seed"] in done]
    return run


# The timings in the raw files were taken on 2 cores shared with other jobs (load 8–15): pruned models
# timed slower than the dense one (speed-ups < 1×). They are kept in criteria_<config>*.json but not shown.
SHOW_LATENCY = False

def latency_note(latency: dict, recipe: dict | None = None) -> str:
    """The notes' latency bullet once bench/criteria_latency.py has run ; ``recipe``:
    bench/structured_latency.py's timing of the shipped recipe's architecture, for comparison."""
    cfgs = latency["configs"]
    per = "; ".join(f"{c['model']}: batch {c['batch']}, {c['repeats']} repeats, {c['unique_architectures']} "
                    f"architectures for {c['points']} points, export = {c['export']}" for c in cfgs.values())
    text = (f"**Latency (speed-up columns)** was measured afterwards, without retraining, by "
            f"`bench/criteria_latency.py` (`criteria_latency.md`/`.json`; command `{latency['command']}`; 1 torch "
            f"thread; load average {latency['loadavg_start'][0]:.2f} at the start, {latency['loadavg_end'][0]:.2f} "
            "at the end, the machine shared with other engineers' jobs). Each point's architecture is rebuilt from a "
            "fresh model with the point's per-group unit counts (its MACs checked against the point's), identical "
            "architectures are timed once, and all architectures of one MAC target are timed interleaved with the "
            "dense model (`prunekit.measure.compare_latency`); speed-up = dense median ms / pruned median ms, "
            "mean ± std over the seeds' architectures (where the seeds share one architecture, as uniform "
            "allocation mostly does, the std is 0: it holds no timing noise). `eager` is the model as trained; "
            "`export` is `prunekit.export.prepare_inference` as in the shipped structured recipe, applied to dense "
            f"and pruned alike. {per}. The cnn1d points stored no per-group ratios; their widths were solved from "
            "(MACs, params), which fixes them uniquely except for the points listed in `criteria_latency.md` (left "
            "out). The old timings of the loaded runs stay in the raw `criteria_cnn1d.json` and are not shown.")
    if recipe:
        sp = {"export" if m == "fold+cl" else m: v["256"]["speedup_median"]  # fold+cl is the recipe's export
              for m, v in recipe["modes"].items() if "256" in v}
        text += (" For comparison, the shipped recipe's 2× architecture (`structured-resnet-mnist`: taylor/sensitivity "
                 "with `round_to: 8`, i.e. widths in multiples of 8, where the benchmark's allocations keep any width) "
                 f"timed {', '.join(f'{v:.2f}× {m}' for m, v in sp.items())} at batch 256 in the same session "
                 f"(`{recipe['command']}`, {recipe['macs_reduction']:.2f}× fewer MACs, "
                 f"{next(iter(recipe['modes'].values()))['256']['repeats']} interleaved repeats; "
                 "`criteria_latency_recipe.json`).")
    return textwrap.fill(text, 104, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False) + "\n"


def _build(results: Path, sources: dict[str, list[str]]) -> tuple[dict, list[str], list]:
    """criteria.json's per-config summary, criteria.md's generated lines and the plot's runs, from the raw files
    ``sources`` (per config, file names under ``results``) and criteria_latency*.json."""
    runs = [r for r in (_merge([results / f for f in fs]) for fs in sources.values()) if r is not None]
    lat_file = results / "criteria_latency.json"  # bench/criteria_latency.py: measured on rebuilt architectures
    latency = json.loads(lat_file.read_text()) if lat_file.exists() else {"configs": {}}
    summary, md, plotted = {}, ["# Criteria × allocation strategies at MAC budgets", "",
                                "Generated by `bench/criteria.py` (see its docstring); raw per-seed points in "
                                "`criteria_<config>.json`. Accuracy is on the test split after the same "
                                "fine-tuning budget for every point.", ""], []
    for run in runs:
        measured = latency["configs"].get(run["config"])
        rows = summarise(run, measured)
        plotted.append((run, rows))
        dense = run["dense"]
        acc_m, acc_s = _ms([d["accuracy"] for d in dense])
        summary[run["config"]] = {"model": run["model"], "data": run["data"], "dense_accuracy_mean": acc_m,
                                  "dense_accuracy_std": acc_s,
                                  "dense": [{k: v for k, v in d.items() if SHOW_LATENCY or k != "latency_ms"}
                                            for d in dense], "rows": rows,
                                  "pareto": pareto(rows)}
        md += _run_lines(run, rows, measured, latency)
    rec_file = results / "criteria_latency_recipe.json"
    recipe = json.loads(rec_file.read_text()) if rec_file.exists() else None
    md += ["![accuracy vs MACs](criteria.png)", ""]
    if latency["configs"]:
        md += ["## Latency", "", latency_note(latency, recipe).rstrip("\n")]
    return summary, md, plotted


def _run_lines(run: dict, rows: list[dict], measured: dict | None, latency: dict) -> list[str]:
    dense = run["dense"]
    acc_m, acc_s = _ms([d["accuracy"] for d in dense])
    lat = dense[0].get("latency_ms") if SHOW_LATENCY else None
    search = run.get("search")
    return [f"## {run['model']} on {run['data']}", "",
            f"Dense: {100 * acc_m:.2f} ± {100 * acc_s:.2f}% over seeds {[d['seed'] for d in dense]} "
            f"({dense[0]['macs']:,} MACs, {dense[0]['params']:,} params"
            + (f", latency {lat} ms at batch sizes" if lat else "") + f"). Training {run['train']['epochs']} "
            f"epochs at LR {run['train']['lr']}; fine-tune {run['finetune']['epochs']} epoch(s) at LR "
            f"{run['finetune']['lr']} (10× lower) on {run['ft_subset'] or 'all'} training images, the same for "
            f"every point; calibration {run['calibration']} images; sensitivity ratios "
            f"{run['sensitivity_ratios']}"
            + (f" on {run['sensitivity_samples']} validation images" if "sensitivity_samples" in run else "")
            + (f"; search: population {search['population']}, {search['generations']} generations, proxy on "
               f"{search['proxy_val']} validation images"
               + (f" after re-estimating BN statistics on {search['recalibration']} training images"
                  if search["recalibration"] else " (no BN re-estimation)") if search else "")
            + (". Latency: seed 0 only, median of 5, 1 thread." if lat else
               f". Speed-up: measured on the rebuilt architectures, batch {measured['batch']}, 1 thread "
               "(`criteria_latency.md`, section Latency below)." if measured else ". No latency: see the notes."),
            "", *_table(run, rows, measured), "", "Pareto front (mean accuracy vs MACs): " +
            ", ".join(f"{r['criterion']}/{r['strategy']}@{r['reduction_target']:g}×" for r in pareto(rows)), "",
            "Allocation vs uniform at ≥ 2×:", "", *_comparisons(rows, run["points"]), "", *_proxy_check(run),
            *(["Measured latency (`criteria_latency.md`):", "", *latency_summary(latency, run["config"]), ""]
              if measured else [])]


def render(result: dict) -> str:
    """criteria.md from criteria.json (which names the raw files it summarises)."""
    from _common import RESULTS, render_footer, render_sources  # bench/ is sys.path[0]

    _, md, _ = _build(RESULTS, result["sources"])
    names = [f for fs in result["sources"].values() for f in fs]
    return "\n".join(md) + "\n" + render_sources(names) + render_footer(result)


def write_report(results: Path, files: dict[str, list[Path]]) -> None:
    """criteria.json (keeping its notes), criteria.md and criteria.png from the raw per-config files."""
    from _common import render_footer, render_sources, write_json  # bench/ is sys.path[0]

    sources = {name: [f.name for f in fs] for name, fs in files.items() if fs}
    summary, md, plotted = _build(results, sources)
    old = results / "criteria.json"
    notes = json.loads(old.read_text()).get("notes", []) if old.exists() else []
    result = write_json(old, {"configs": summary, "sources": sources, "notes": notes})
    names = [f for fs in sources.values() for f in fs]
    (results / "criteria.md").write_text("\n".join(md) + "\n" + render_sources(names) + render_footer(result))
    if plotted:
        _plot(plotted, results / "criteria.png")
