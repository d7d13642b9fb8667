"""Does removing MACs remove latency? MACs ratio vs measured CPU latency ratio at 50% channels.

For resnet18, resnet50, mobilenet_v2 and vit_b_16 (torchvision, weights=None, 224x224): prune 50% of
the units of every exactly-prunable group (L2, uniform), then time the dense and the pruned model
at batch 1 and 32, alternating dense/pruned runs so that load on the machine hits both alike. Each
``--modes`` entry prepares both models alike: ``eager`` (as built, ``torch.no_grad``) or ``fold+cl``
(:func:`prunekit.export.prepare_inference`: BatchNorm folded into the convolutions, channels_last
weights and inputs, ``torch.inference_mode``). Writes bench/results/latency_vs_macs.{json,md}.

    .venv/bin/python bench/latency_vs_macs.py --threads 1 --models resnet18 resnet50 mobilenet_v2
"""

from __future__ import annotations

import argparse
import copy
import json
import os

import torch
from _common import render_footer, write_results  # bench/ is sys.path[0] when run as a script

from prunekit.export import InferenceConfig, prepare_inference

MODES = {"eager": None, "fold+cl": InferenceConfig(fold_bn=True, channels_last=True)}


def measure(name: str, batches: list[int], repeats: dict[int, int], modes: list[str]) -> list[dict]:
    import torchvision

    from prunekit import StructuredConfig, prune_
    from prunekit.measure import compare_latency, count_macs

    torch.manual_seed(0)
    dense = torchvision.models.get_model(name, weights=None).eval()
    pruned = copy.deepcopy(dense)
    x1 = torch.randn(1, 3, 224, 224)
    res = prune_(pruned, StructuredConfig(sparsity=0.5, importance="l2"), example_inputs=x1)
    macs = {}
    for tag, m in (("dense", dense), ("pruned", pruned)):
        with torch.no_grad():
            macs[tag] = count_macs(m, x1).dense
    rows = []
    for mode, b in ((mode, b) for b in batches for mode in modes):
        cfg = MODES[mode]
        d, p = (dense, pruned) if cfg is None else (prepare_inference(dense, cfg), prepare_inference(pruned, cfg))
        ctx = torch.no_grad if cfg is None else torch.inference_mode
        fmt = cfg.memory_format if cfg else torch.contiguous_format
        with ctx():  # dense and pruned alternate run by run after one warm-up each
            td, tp = compare_latency([d, p], x1, batch=b, warmup=1, repeats=repeats.get(b, 3), memory_format=fmt)
        lat_d, lat_p = td.median_ms, tp.median_ms
        speed_macs, speed_lat = macs["dense"] / macs["pruned"], lat_d / lat_p
        rows.append({"model": name, "mode": mode, "batch": b, "macs_dense": macs["dense"],
                     "macs_pruned": macs["pruned"],
                     "macs_speedup": speed_macs, "latency_dense_ms": lat_d, "latency_pruned_ms": lat_p,
                     "latency_speedup": speed_lat, "latency_over_macs": speed_lat / speed_macs,
                     "repeats": td.repeats, "engine_seconds": res.seconds, "threads": torch.get_num_threads()})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["resnet18", "resnet50", "mobilenet_v2", "vit_b_16"])
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 32])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--repeats-b1", type=int, default=10)
    ap.add_argument("--repeats-b32", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["eager", "fold+cl"], choices=list(MODES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        rows += measure(name, args.batches, {1: args.repeats_b1, 32: args.repeats_b32}, args.modes)
    write_results("latency_vs_macs", {"threads": args.threads, "rows": rows}, render)


def render(result: dict) -> str:
    """latency_vs_macs.md from its JSON."""
    rows, p = result["rows"], result["provenance"]
    repeats = " / ".join(f"{n} (batch {b})" for b, n in sorted({(r["batch"], r["repeats"]) for r in rows}))
    load = lambda v: "unknown" if v is None else f"{v[0]:.1f}"
    md = ["# MACs vs measured CPU latency at 50% channels", "",
          f"torchvision models, weights=None, 224x224, L2 uniform 50% of every exactly-prunable group, "
          f"{result['threads']} CPU thread(s), dense and pruned runs alternated; median of {repeats} repeats. "
          "Modes, applied to dense and pruned alike: `eager` = the models as built, `torch.no_grad`; `fold+cl` = "
          "inference export (`prunekit.export.prepare_inference`: BatchNorm folded into the convolutions, "
          "channels_last weights and inputs), `torch.inference_mode`. Load average at the start "
          f"{load(p['loadavg_start'])}, at the end {load(p['loadavg_end'])} (the 2-core machine was shared). "
          "speed-up = dense / pruned. Produced by `bench/latency_vs_macs.py` (command below).", "",
          "| model | mode | batch | MACs dense | MACs pruned | MACs speed-up | latency dense ms | latency pruned ms | "
          "latency speed-up | latency / MACs speed-up |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['model']} | {r['mode']} | {r['batch']} | {r['macs_dense'] / 1e9:.2f}G | "
                  f"{r['macs_pruned'] / 1e9:.2f}G | "
                  f"{r['macs_speedup']:.2f}x | {r['latency_dense_ms']:.1f} | {r['latency_pruned_ms']:.1f} | "
                  f"{r['latency_speedup']:.2f}x | {r['latency_over_macs']:.2f} |")
    return "\n".join(md) + "\n" + render_footer(result)

if __name__ == "__main__":
    main()
