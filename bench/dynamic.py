"""Dynamic pruning against static structured pruning at the same average MACs (issue 14).

For each seed: train the dense model; build the dynamic one (early exits on resnet_mini/MNIST and cnn1d/MNIST-1D;
token merging / keeping on vit_mini/MNIST); prune a copy of the dense model statically (structured, L2 channel
groups, global allocation) to the dynamic model's mean MACs per input and fine-tune it; then time all three at
batch 1 over every test input, alternated input by input (CPU time of the timing thread, 1 thread), and over the
split in batches of 256 (early exits served by shrinking the batch at each exit). ``--vit-timing`` times
token merging (r = 8) on random-init ``vit_b_16`` (torchvision) and ``deit_small`` (timm) at batch 1 and 8.

    OMP_NUM_THREADS=1 python bench/dynamic.py --seeds 0 1 2
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

import prunekit as pk
from prunekit.data import load_dataset
from prunekit.dynamic import DynamicConfig, EarlyExitConfig, TokenKeepConfig, TokenMergeConfig, build_dynamic
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
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _static(dense, data, macs_kept: float, seed: int) -> tuple[torch.nn.Module | None, dict]:
    """Structured pruning of a copy of ``dense`` to ``macs_kept`` of its MACs, then 2 epochs of fine-tuning."""
    model = copy.deepcopy(dense)
    cfg = pk.StructuredConfig(budget=pk.Budget(macs_kept=macs_kept), importance="l2", allocation="global",
                              max_ratio=0.95)
    try:
        pk.prune_(model, cfg, example_inputs=data.x_val[:1])
    except pk.PrunekitError as e:
        return None, {"error": str(e), "macs_kept": macs_kept}
    before = evaluate(model, data.x_test, data.y_test).accuracy
    train(model, data, TrainConfig(epochs=2, lr=0.01, batch_size=64), seed=seed + 1, progress=False)
    return model.eval(), {"macs_kept": macs_kept, "accuracy_before_finetune": before}


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
    static, static_info = _static(reference, data, min(ratio, 0.99), seed)
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


def vit_timing(repeats: int) -> list[dict]:
    """Random-init vit_b_16 / deit_small: dense vs r = 8 token merging, alternated, batch 1 and 8."""
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
        for batch in (1, 4):
            xb = x.expand(batch, -1, -1, -1).contiguous()
            cpu: list[list[float]] = [[], []]
            with torch.no_grad():
                for m in (dense, tome):
                    m(xb)
                for i in range(repeats):
                    for j in ((0, 1) if i % 2 == 0 else (1, 0)):
                        c0 = time.process_time()
                        (dense, tome)[j](xb)
                        cpu[j].append((time.process_time() - c0) * 1e3)
            d, t = statistics.median(cpu[0]), statistics.median(cpu[1])
            rows.append({"model": name, "batch": batch, "r": 8, "dense_ms": d, "tome_ms": t, "speedup": d / t,
                         "throughput_gain": d / t, "tokens": tome.last_tokens, "repeats": repeats,
                         "dense_gmacs": count_macs(dense, x).dense / 1e9, "tome_gmacs": count_macs(tome, x).dense / 1e9,
                         "clock": "process_time (median per batch)", "threads": torch.get_num_threads()})
            _log(f"{name} batch {batch}: {d:.1f} → {t:.1f} ms ({d / t:.2f}×)")
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
    tok = [r for r in result["runs"] if r["method"] != "early_exit"]
    if tok:
        lines += ["", "## Tokens per block (input, then after each block)", ""]
        for r in tok[:2]:
            lines.append(f"- {r['case']}: {r['describe']['tokens_per_block']}")
    if result.get("gate_timing"):
        lines += ["", "## Channel gating on resnet_mini at batch 1 (gathered weights; random init, timing only)", "",
                  "| keep | dense ms | gated ms | speed-up | MACs dense → gated |", "|---|---|---|---|---|"]
        for g in result["gate_timing"]:
            lines.append(f"| {g['keep']} | {g['dense_ms']:.3f} | {g['gated_ms']:.3f} | {g['speedup']:.2f}× | "
                         f"{g['dense_macs'] / 1e6:.2f} M → {g['gated_macs'] / 1e6:.2f} M |")
    if result.get("vit_timing"):
        lines += ["", "## Token merging on ImageNet-sized ViTs (random init, r = 8)", "",
                  "| model | batch | dense ms | ToMe ms | speed-up (throughput) | GMACs dense → ToMe | tokens |",
                  "|---|---|---|---|---|---|---|"]
        for v in result["vit_timing"]:
            lines.append(f"| {v['model']} | {v['batch']} | {v['dense_ms']:.1f} | {v['tome_ms']:.1f} | "
                         f"{v['speedup']:.2f}× | {v['dense_gmacs']:.2f} → {v['tome_gmacs']:.2f} | "
                         f"{v['tokens'][0]} → {v['tokens'][-1]} |")
    return "\n".join(lines) + "\n" + render_footer(result)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--vit-timing", action="store_true", help="also time r = 8 ToMe on vit_b_16 and deit_small")
    p.add_argument("--vit-repeats", type=int, default=6)
    p.add_argument("--gate-timing", action="store_true", help="also time channel gating on resnet_mini at batch 1")
    p.add_argument("--name", default="dynamic")
    p.add_argument("--merge", nargs="+", metavar="NAME",
                   help="combine bench/results/NAME.json files (runs split over processes) into --name")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.merge:
        parts = [json.loads((RESULTS / f"{n}.json").read_text()) for n in args.merge]
        result = {"runs": [r for q in parts for r in q["runs"]],
                  "vit_timing": [v for q in parts for v in q["vit_timing"]],
                  "gate_timing": [v for q in parts for v in q.get("gate_timing", [])],
                  "notes": [n for q in parts for n in q.get("notes", [])],
                  "parts": {n: q["provenance"] for n, q in zip(args.merge, parts, strict=True)}}
        write_results(args.name, result, render)
        return 0
    runs, trained = [], {}
    result = {"runs": runs, "vit_timing": [], "gate_timing": [], "notes": []}
    if args.gate_timing:
        result["gate_timing"] = gate_timing()
        write_results(args.name, result, render)
    if args.vit_timing:
        result["vit_timing"] = vit_timing(args.vit_repeats)
        write_results(args.name, result, render)
    for seed in args.seeds:
        for name in args.cases:
            runs.append(run_case(name, CASES[name], seed, trained))
            write_results(args.name, result, render)  # after every run: a cut-off run keeps what it measured
        trained.clear()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
