"""Dynamic pruning against static structured pruning at the same average MACs (issue 14).

For each seed: train the dense model; build the dynamic one (early exits on resnet_mini/MNIST and cnn1d/MNIST-1D;
token merging / keeping on vit_mini/MNIST); prune a copy of the dense model statically (structured, L2 channel
groups, global allocation) to the dynamic model's mean MACs per input and fine-tune it; then time all three at
batch 1 over every test input, alternated input by input (CPU time of the timing thread, 1 thread), and over the
split in batches of 256 (early exits served by shrinking the batch at each exit). ``--vit-timing`` times
token merging (r = 8) on random-init ``vit_b_16`` (torchvision) and ``deit_small`` (timm) at batch 1 and 32, beside a
static structured copy at the same MACs; ``--vit-curve`` trains a small ViT on MNIST per seed and measures every
token schedule of ``bench/_vit_tokens.py`` (accuracy, MACs, batch-1 latency).

    OMP_NUM_THREADS=1 python bench/dynamic.py --seeds 0 1 2
    OMP_NUM_THREADS=1 python bench/dynamic.py --seeds 0 1 2 --cases --vit-curve --name dynamic_vitcurve
    python bench/dynamic.py --merge dynamic dynamic_vitcurve      # later parts replace earlier rows of a seed
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
from _common import RESULTS, render_footer, write_results
from _static_match import static_at_macs
from _vit_tokens import render_vit_curve, run_vit_curve

from prunekit.data import load_dataset
from prunekit.dynamic import (
    ChannelGateConfig,
    DynamicConfig,
    EarlyExitConfig,
    TokenKeepConfig,
    TokenMergeConfig,
    build_dynamic,
)
from prunekit.dynamic.base import DYNAMIC_METHODS
from prunekit.dynamic.measure import time_batched, time_per_input
from prunekit.measure import count_macs
from prunekit.models import build_model
from prunekit.training import TrainConfig, evaluate, train

CASES = {
    "early_exit/resnet_mini/mnist": dict(
        model="resnet_mini", data="mnist", train=TrainConfig(epochs=4, lr=0.05, batch_size=64),
        dynamic=DynamicConfig(early_exit=EarlyExitConfig(exits=["layers.0", "layers.2", "layers.5"], epochs=5,
                                                         lr=0.01))),
    "early_exit/cnn1d/mnist1d": dict(
        model="cnn1d", data="mnist1d", train=TrainConfig(epochs=15, lr=0.05, batch_size=64),
        dynamic=DynamicConfig(early_exit=EarlyExitConfig(exits=[1], head="pool", epochs=5, lr=0.01))),
    "token_merge/vit_mini/mnist": dict(
        model="vit_mini", data="mnist",
        train=TrainConfig(epochs=10, lr=0.002, batch_size=64, optimizer="adam", weight_decay=0.05),
        dynamic=DynamicConfig(token_merge=TokenMergeConfig(r=6))),
    "token_keep/vit_mini/mnist": dict(
        model="vit_mini", data="mnist",
        train=TrainConfig(epochs=10, lr=0.002, batch_size=64, optimizer="adam", weight_decay=0.05),
        dynamic=DynamicConfig(token_keep=TokenKeepConfig(keep_rate=0.5, blocks=[1, 3]))),
    "channel_gate/resnet_mini/mnist": dict(
        model="resnet_mini", data="mnist", train=TrainConfig(epochs=4, lr=0.05, batch_size=64),
        dynamic=DynamicConfig(channel_gate=ChannelGateConfig(keep=0.5, epochs=2, lr=0.01))),
}


#: fine-tuning of the static model after pruning (the CNN cases)
STATIC_FINETUNE = TrainConfig(epochs=2, lr=0.01, batch_size=64)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_case(name: str, case: dict, seed: int, trained: dict) -> dict:
    data = load_dataset(case["data"])
    key = (case["model"], case["data"], seed)
    t0 = time.perf_counter()
    if key not in trained:
        torch.manual_seed(seed)
        m = build_model(case["model"], data.input_shape, data.num_classes)
        train(m, data, case["train"], seed=seed, progress=False)
        trained[key] = m.eval()
    dense = trained[key]
    reference = copy.deepcopy(dense).eval()
    dyn, facts = build_dynamic(copy.deepcopy(dense), data, case["dynamic"], seed=seed, log=_log)
    method = case["dynamic"].method
    desc = DYNAMIC_METHODS.get(method).describe(dyn, data.x_test, data.y_test)
    dense_macs = count_macs(reference, data.x_test[:1]).dense
    ratio = desc["mean_macs"] / dense_macs
    static, static_info = static_at_macs(reference, data.x_val[:1], min(ratio, 0.99), data, STATIC_FINETUNE, seed)
    models = [reference, dyn] + ([static] if static is not None else [])
    one = time_per_input(models, data.x_test)
    batched = time_batched(models, data.x_test, 256, repeats=2)
    names = ["dense", "dynamic", "static"]
    out = {"case": name, "seed": seed, "method": method, "dense_macs": dense_macs, "mean_macs": desc["mean_macs"],
           "macs_ratio": ratio, "build": {k: v for k, v in facts.items() if k not in ("path_costs",)},
           "describe": {k: v for k, v in desc.items() if k != "test_curve"}, "static_info": static_info,
           "wall_s": time.perf_counter() - t0}
    for j, m in enumerate(models):
        out[names[j]] = {"accuracy": evaluate(m, data.x_test, data.y_test).accuracy,
                         "macs": count_macs(m, data.x_test[:1]).dense if names[j] != "dynamic" else desc["mean_macs"],
                         "batch1": one[j], "batch256": batched[j]}
    _log(f"{name} seed {seed}: " + ", ".join(f"{n} {out[n]['accuracy']:.4f} {out[n]['batch1']['mean_ms']:.3f} ms"
                                             for n in names if n in out and "accuracy" in out[n]))
    return out


def vit_timing(repeats: int, batches: tuple[int, ...] = (1, 32)) -> list[dict]:
    """Random-init vit_b_16 / deit_small: dense, r = 8 token merging and a static structured copy at ToMe's MACs,
    alternated (the order rotates each repeat), at each batch size; CPU time of the process per batch (median)."""
    import timm
    from torchvision.models import vit_b_16

    from prunekit.dynamic.tokens import token_model

    rows = []
    for name, make in (("vit_b_16", lambda: vit_b_16()),
                       ("deit_small", lambda: timm.create_model("deit_small_patch16_224", pretrained=False))):
        torch.manual_seed(0)
        dense = make().eval()
        x = torch.randn(1, 3, 224, 224)
        tome = token_model(dense, x, "token_merge", TokenMergeConfig(r=8))
        dense_macs, tome_macs = count_macs(dense, x).dense, count_macs(tome, x).dense
        static, info = static_at_macs(dense, x, tome_macs / dense_macs)
        if static is None:
            _log(f"{name}: static pruning refused: {info['error']}")
        models = [dense, tome] + ([static] if static is not None else [])
        for batch in batches:
            xb = x.expand(batch, -1, -1, -1).contiguous()
            cpu: list[list[float]] = [[] for _ in models]
            with torch.no_grad():
                for m in models:
                    m(xb)
                for i in range(repeats):
                    for j in [(i + k) % len(models) for k in range(len(models))]:
                        c0 = time.process_time()
                        models[j](xb)
                        cpu[j].append((time.process_time() - c0) * 1e3)
            med = [statistics.median(c) for c in cpu]
            row = {"model": name, "batch": batch, "r": 8, "dense_ms": med[0], "tome_ms": med[1],
                   "speedup": med[0] / med[1], "throughput_gain": med[0] / med[1], "tokens": tome.last_tokens,
                   "repeats": repeats, "dense_gmacs": dense_macs / 1e9, "tome_gmacs": tome_macs / 1e9,
                   "macs_bound": dense_macs / tome_macs, "clock": "process_time (median per batch)",
                   "threads": torch.get_num_threads(), "all_ms": cpu}
            if static is not None:
                row.update(static_ms=med[2], static_speedup=med[0] / med[2],
                           static_gmacs=count_macs(static, x).dense / 1e9)
            rows.append(row)
            _log(f"{name} batch {batch}: {med[0]:.1f} → {med[1]:.1f} ms ({med[0] / med[1]:.2f}×); static "
                 f"{row.get('static_speedup', float('nan')):.2f}×")
    return rows


def gate_timing() -> list[dict]:
    """resnet_mini (random init; timing needs no training) with channel gates on every block's inner conv: batch-1
    CPU time over the MNIST test split, dense and gated alternated input by input; MACs on the gathered path."""
    from prunekit.dynamic import ChannelGateConfig
    from prunekit.dynamic.gates import gate_channels

    data = load_dataset("mnist")
    torch.manual_seed(0)
    dense = build_model("resnet_mini", data.input_shape, data.num_classes).eval()
    rows = []
    for keep in (0.5, 0.25):
        gated = gate_channels(copy.deepcopy(dense), data.x_test[:1], ChannelGateConfig(keep=keep)).eval()
        one = time_per_input([dense, gated], data.x_test)
        rows.append({"model": "resnet_mini", "keep": keep, "dense_ms": one[0]["mean_ms"], "gated_ms": one[1]["mean_ms"],
                     "speedup": one[0]["mean_ms"] / one[1]["mean_ms"],
                     "dense_macs": count_macs(dense, data.x_test[:1]).dense,
                     "gated_macs": count_macs(gated, data.x_test[:1]).dense, "timing": one})
        _log(f"gates keep {keep}: {rows[-1]['speedup']:.2f}× at batch 1")
    return rows


def _mean_sd(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{xs[0]:.3f}"
    return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def render(result: dict) -> str:
    lines = ["# Dynamic pruning vs static structured pruning at the same mean MACs", "",
             "Each row: mean ± s.d. over seeds. *Batch-1 ms*: mean CPU time per input over every test input (timing "
             "thread's CPU clock, 1 thread), dense, dynamic and static alternated input by input. *Batch 256*: CPU "
             "ms per batch over the split; early exits served by shrinking the batch at each exit. Static: the dense "
             "model pruned structurally (L2 groups, global) to the dynamic model's mean MACs, fine-tuned 2 epochs.",
             "", "| case | seeds | model | accuracy | mean MACs | batch-1 ms | speed-up b1 | batch-256 ms |",
             "|---|---|---|---|---|---|---|---|"]
    by_case: dict[str, list[dict]] = {}
    for r in result["runs"]:
        by_case.setdefault(r["case"], []).append(r)
    for case, runs in by_case.items():
        for side in ("dense", "dynamic", "static"):
            have = [r for r in runs if side in r]
            if not have:
                lines.append(f"| {case} | – | static | {runs[0]['static_info'].get('error', 'not run')} | | | | |")
                continue
            acc = [100 * r[side]["accuracy"] for r in have]
            macs = [r[side]["macs"] / 1e6 for r in have]
            b1 = [r[side]["batch1"]["mean_ms"] for r in have]
            sp = [r["dense"]["batch1"]["mean_ms"] / r[side]["batch1"]["mean_ms"] for r in have]
            b256 = [r[side]["batch256"]["mean_ms"] for r in have]
            lines.append(f"| {case} | {len(have)} | {side} | {_mean_sd(acc)} % | {_mean_sd(macs)} M | {_mean_sd(b1)} | "
                         f"{_mean_sd(sp)}× | {_mean_sd(b256)} |")
    ee = [r for r in result["runs"] if r["method"] == "early_exit"]
    if ee:
        lines += ["", "## Exit histograms (test split)", "", "| case | seed | exits | histogram | thresholds |",
                  "|---|---|---|---|---|"]
        for r in ee:
            d = r["describe"]
            lines.append(f"| {r['case']} | {r['seed']} | {', '.join(d['exit_names'])} | {d['exit_histogram']} | "
                         f"{', '.join(f'{t:g}' for t in d['thresholds'])} |")
    tok = [r for r in result["runs"] if r["method"] in ("token_merge", "token_keep")]
    if tok:
        lines += ["", "## Tokens per block (input, then after each block)", ""]
        for r in tok[:2]:
            lines.append(f"- {r['case']}: {r['describe']['tokens_per_block']}")
    gates = [r for r in result["runs"] if r["method"] == "channel_gate"]
    if gates:
        lines += ["", "## Channel gating after training (channels computed per input, of each gated conv)", ""]
        for r in gates:
            kept = r["describe"]["channels_kept"]
            total = r["describe"]["channels_total"]
            lines.append(f"- seed {r['seed']}: " + ", ".join(f"{k} {kept[k]}/{total[k]}" for k in kept))
    lines += render_vit_curve(result.get("vit_curve", []))
    if result.get("gate_timing"):
        lines += ["", "## Channel gating on resnet_mini at batch 1 (gathered weights; random init, timing only)", "",
                  "| keep | dense ms | gated ms | speed-up | MACs dense → gated |", "|---|---|---|---|---|"]
        for g in result["gate_timing"]:
            lines.append(f"| {g['keep']} | {g['dense_ms']:.3f} | {g['gated_ms']:.3f} | {g['speedup']:.2f}× | "
                         f"{g['dense_macs'] / 1e6:.2f} M → {g['gated_macs'] / 1e6:.2f} M |")
    if result.get("vit_timing"):
        lines += ["", "## Token merging on ImageNet-sized ViTs (random init, r = 8)", "",
                  "CPU time per batch (median of the repeats; dense, ToMe and static alternated). *MACs bound*: "
                  "dense MACs ÷ ToMe MACs, the speed-up if time followed MACs. *Static*: the dense model pruned "
                  "structurally (L2, global) to ToMe's MACs.", "",
                  "| model | batch | dense ms | ToMe ms | speed-up (throughput) | MACs bound | static ms | static "
                  "speed-up | GMACs dense → ToMe | tokens |", "|---|---|---|---|---|---|---|---|---|---|"]
        for v in result["vit_timing"]:
            bound = v.get("macs_bound", v["dense_gmacs"] / v["tome_gmacs"])
            st = (f"{v['static_ms']:.1f} | {v['static_speedup']:.2f}×" if "static_ms" in v else "– | –")
            lines.append(f"| {v['model']} | {v['batch']} | {v['dense_ms']:.1f} | {v['tome_ms']:.1f} | "
                         f"{v['speedup']:.2f}× | {bound:.2f}× | {st} | {v['dense_gmacs']:.2f} → "
                         f"{v['tome_gmacs']:.2f} | {v['tokens'][0]} → {v['tokens'][-1]} |")
    return "\n".join(lines) + "\n" + render_footer(result)


def merge_parts(parts: list[dict], names: list[str]) -> dict:
    """Combines results files (runs split over processes): a later part's run of the same case and seed, and its
    non-empty ``vit_timing`` / ``gate_timing`` / ``vit_curve`` seeds, replace an earlier part's."""
    runs: dict[tuple, dict] = {}
    out: dict = {"vit_timing": [], "gate_timing": [], "notes": [], "parts": {}}
    curves: dict[int, dict] = {}
    for name, q in zip(names, parts, strict=True):
        for r in q["runs"]:
            runs[(r["case"], r["seed"])] = r
        for key in ("vit_timing", "gate_timing"):
            if q.get(key):
                out[key] = q[key]
        for c in q.get("vit_curve", []):
            curves[c["seed"]] = c
        out["notes"] += [n for n in q.get("notes", []) if n not in out["notes"]]
        out["parts"].update(q.get("parts") or {name: q["provenance"]})
    return {"runs": list(runs.values()), **out, "vit_curve": [curves[k] for k in sorted(curves)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--vit-timing", action="store_true", help="also time r = 8 ToMe on vit_b_16 and deit_small")
    p.add_argument("--vit-repeats", type=int, default=6)
    p.add_argument("--gate-timing", action="store_true", help="also time channel gating on resnet_mini at batch 1")
    p.add_argument("--vit-curve", action="store_true",
                   help="also train the small ViT on MNIST per seed and measure every token schedule")
    p.add_argument("--vit-epochs", type=int, default=None, help="dense ViT training epochs (default: _vit_tokens)")
    p.add_argument("--vit-finetune-epochs", type=int, default=None,
                   help="fine-tuning epochs of the token schedules and the static ViT (default: _vit_tokens)")
    p.add_argument("--name", default="dynamic")
    p.add_argument("--merge", nargs="+", metavar="NAME",
                   help="combine bench/results/NAME.json files (runs split over processes) into --name")
    p.add_argument("--notes", metavar="FILE", help="with --merge: a JSON list of Markdown notes that replaces theirs")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.merge:
        merged = merge_parts([json.loads((RESULTS / f"{n}.json").read_text()) for n in args.merge], args.merge)
        if args.notes:
            merged["notes"] = json.loads(open(args.notes, encoding="utf-8").read())
        write_results(args.name, merged, render)
        return 0
    runs, trained = [], {}
    result = {"runs": runs, "vit_timing": [], "gate_timing": [], "vit_curve": [], "notes": []}
    if args.gate_timing:
        result["gate_timing"] = gate_timing()
        write_results(args.name, result, render)
    if args.vit_timing:
        result["vit_timing"] = vit_timing(args.vit_repeats)
        write_results(args.name, result, render)
    if args.vit_curve:
        for seed in args.seeds:
            result["vit_curve"].append(run_vit_curve(seed, args.vit_epochs, args.vit_finetune_epochs))
            write_results(args.name, result, render)
    for seed in args.seeds:
        for name in args.cases:
            runs.append(run_case(name, CASES[name], seed, trained))
            write_results(args.name, result, render)  # after every run: a cut-off run keeps what it measured
        trained.clear()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
