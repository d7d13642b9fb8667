"""Where the time goes: torch.profiler self-CPU time per op, dense vs 50%-channel pruned, eager vs export.

For each torchvision model (weights=None, 224×224, L2 uniform 50% of every exactly-prunable group, as
in ``latency_vs_macs.py``) profiles two forwards of the dense and of the pruned model, 1 thread,
as built (``torch.no_grad``) and as exported (BatchNorm folded, channels_last,
``torch.inference_mode``); lists the ops with the most dense time and how much each shrank.
Note that with 1 thread PyTorch sends 1×1 convolutions at batch < 16 to its slow non-oneDNN kernel,
so profile at batch ≥ 16 to see what batch 32 runs. Writes bench/results/profile_ops.{json,md}.

    .venv/bin/python bench/profile_ops.py --models resnet18 mobilenet_v2 --batch 16
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
from _common import render_footer, write_results  # bench/ is sys.path[0] when run as a script
from torch.profiler import ProfilerActivity, profile

from prunekit.export import InferenceConfig, prepare_inference


def op_times(model, x, ctx) -> dict[str, float]:
    with ctx():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(2):
                model(x)
    return {e.key: e.self_cpu_time_total / 2e3 for e in p.key_averages()}


def run(name: str, batch: int) -> list[dict]:
    import torchvision

    from prunekit import StructuredConfig, prune_

    torch.manual_seed(0)
    dense = torchvision.models.get_model(name, weights=None).eval()
    pruned = copy.deepcopy(dense)
    prune_(pruned, StructuredConfig(sparsity=0.5, importance="l2"), example_inputs=torch.randn(1, 3, 224, 224))
    x = torch.randn(batch, 3, 224, 224)
    rows = []
    for mode, cfg in (("eager", None), ("fold+cl", InferenceConfig(fold_bn=True, channels_last=True))):
        ctx = torch.no_grad if cfg is None else torch.inference_mode
        xi = x if cfg is None else x.contiguous(memory_format=cfg.memory_format)
        t = {tag: op_times(m if cfg is None else prepare_inference(m, cfg), xi, ctx)
             for tag, m in (("dense", dense), ("pruned", pruned))}
        total = {k: sum(v.values()) for k, v in t.items()}
        ops = sorted(set(t["dense"]) | set(t["pruned"]), key=lambda k: -t["dense"].get(k, 0.0))[:6]
        rows.append({"model": name, "batch": batch, "mode": mode, "dense_ms": total["dense"],
                     "pruned_ms": total["pruned"],
                     "ops": [{"op": k, "dense_ms": t["dense"].get(k, 0.0), "pruned_ms": t["pruned"].get(k, 0.0)}
                             for k in ops]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [r for name in args.models for r in run(name, args.batch)]
    write_results("profile_ops", {"batch": args.batch, "rows": rows}, render)


def render(result: dict) -> str:
    """profile_ops.md from its JSON."""
    rows, load = result["rows"], result["provenance"]["loadavg_end"]
    batch = result.get("batch") or rows[0]["batch"]
    md = ["# Self-CPU time per op, dense vs pruned (50% channels)", "",
          f"torch.profiler, 2 forwards each, batch {batch}, 1 thread; dense and pruned profiled one after "
          f"the other (not interleaved: shares within a column are more reliable than ratios across columns). "
          f"Load average at the end {'unknown' if load is None else f'{load[0]:.1f}'}. Produced by "
          "`bench/profile_ops.py` (command below).", ""]
    for r in rows:
        md += [f"## {r['model']}, {r['mode']}: dense {r['dense_ms']:.0f} ms, pruned {r['pruned_ms']:.0f} ms "
               f"({r['dense_ms'] / r['pruned_ms']:.2f}×)", "",
               "| op | dense ms | dense share | pruned ms | pruned share | shrank |", "|---|---|---|---|---|---|"]
        for o in r["ops"]:
            md.append(f"| `{o['op']}` | {o['dense_ms']:.1f} | {o['dense_ms'] / r['dense_ms']:.1%} | "
                      f"{o['pruned_ms']:.1f} | {o['pruned_ms'] / r['pruned_ms']:.1%} | "
                      f"{o['dense_ms'] / max(o['pruned_ms'], 1e-9):.2f}× |")
    return "\n".join(md) + "\n" + render_footer(result)

if __name__ == "__main__":
    main()
