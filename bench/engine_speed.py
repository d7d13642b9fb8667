"""Engine speed: graph capture + pruning seconds, prunekit vs Torch-Pruning, side by side in one run.

For each model, one subprocess builds two fresh copies (weights=None, seed 0), then times in the same
process, one thread:

* prunekit: ``DependencyGraph.build`` + ``select_units`` (L2, uniform 50%) + ``prune_groups``
  (which includes one verification forward of the pruned model);
* Torch-Pruning 1.6: ``MetaPruner(model, x, MagnitudeImportance(p=2), pruning_ratio=0.5,
  ignored_layers=[classifier])`` construction + ``step()``.

Both see the same input (1x3xSxS, S from ``--size``). Writes bench/results/engine_speed.{json,md}.

    .venv/bin/python bench/engine_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from _common import render_footer, write_results  # bench/ is sys.path[0] when run as a script

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "densenet121",
          "regnet_y_400mf", "resnext50_32x4d", "shufflenet_v2_x1_0", "squeezenet1_0", "vgg16_bn", "googlenet",
          "inception_v3", "convnext_tiny", "mnasnet1_0", "wide_resnet50_2", "efficientnet_v2_s", "alexnet",
          "vit_b_16", "swin_t"]

_CHILD = r"""
import json, sys, time, torch, torchvision
torch.set_num_threads(1)
name, size, ratio = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def fresh():
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()
s = 224 if name.startswith(("vit", "swin", "maxvit")) else size
x = torch.randn(1, 3, s, s)
out = {"model": name, "size": s}
from prunekit.graph import DependencyGraph
from prunekit.pruners import StructuredConfig, select_units
from prunekit.structured import prune_groups
m = fresh()
with torch.no_grad(): m(x)  # warm the kernels once for both engines
try:
    t0 = time.perf_counter()
    g = DependencyGraph.build(m, x)
    prune_groups(g, select_units(g, StructuredConfig(sparsity=ratio)))
    out["prunekit_s"] = time.perf_counter() - t0
    out["prunekit_params"] = sum(p.numel() for p in m.parameters())
except Exception as e:
    out["prunekit_error"] = f"{type(e).__name__}: {e}"[:200]
print(json.dumps(out), flush=True)  # kept if Torch-Pruning then runs into the timeout
import torch_pruning as tp
m = fresh()
last = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)][-1:]
try:
    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(m, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
                                  ignored_layers=last)
    pruner.step()
    out["tp_s"] = time.perf_counter() - t0
    with torch.no_grad(): m(x)
    out["tp_params"] = sum(p.numel() for p in m.parameters())
except Exception as e:
    out["tp_error"] = f"{type(e).__name__}: {e}"[:200]
print(json.dumps(out))
"""


def run(name: str, size: int, ratio: float, timeout: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        p = subprocess.run([sys.executable, "-c", _CHILD, name, str(size), str(ratio)], capture_output=True,
                           text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        done = _json_lines(e.stdout)
        return dict(done[-1] if done else {"model": name}, error=f"timeout {timeout}s"
                    + (" (in Torch-Pruning)" if done else ""))
    lines = _json_lines(p.stdout)
    return lines[-1] if lines else {"model": name, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}


def _json_lines(stdout: str | bytes | None) -> list[dict]:
    text = stdout.decode() if isinstance(stdout, bytes) else stdout or ""
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args()
    rows = []
    for name in args.models:
        rows.append(run(name, args.size, args.ratio, args.timeout))
        print(json.dumps(rows[-1]), flush=True)
    load = round(os.getloadavg()[2], 1)  # the machine is shared: say how busy it was
    write_results("engine_speed", {"args": {"ratio": args.ratio, "size": args.size}, "summary": summarise(rows, load),
                                   "rows": rows}, render)


def summarise(rows: list[dict], load: float | None) -> dict:
    """Medians over the models both engines pruned (and whose Torch-Pruning result ran)."""
    both = [r for r in rows if "prunekit_s" in r and "tp_s" in r and "tp_error" not in r]
    return {
        "models": len(rows),
        "both_ok": len(both),
        "prunekit_ok": sum("prunekit_s" in r for r in rows),
        "tp_ok": sum("tp_s" in r for r in rows),
        "median_prunekit_s": statistics.median(r["prunekit_s"] for r in both) if both else None,
        "median_tp_s": statistics.median(r["tp_s"] for r in both) if both else None,
        "median_ratio": statistics.median(r["prunekit_s"] / r["tp_s"] for r in both) if both else None,
        "ratio_of_medians": (statistics.median(r["prunekit_s"] for r in both)
                             / statistics.median(r["tp_s"] for r in both)) if both else None,
        "load_average_15min": load,
    }


def render(result: dict) -> str:
    """engine_speed.md from its JSON."""
    rows, summary, args = result["rows"], result["summary"], result["args"]
    load = summary["load_average_15min"]
    md = ["# Engine speed: prunekit vs Torch-Pruning (same run, same models, same ratio)", "",
          f"Capture + prune seconds at ratio {args['ratio']}, batch 1, one CPU thread, input {args['size']}px "
          "(224 for vit/swin). prunekit's time includes one verification forward of the pruned model. "
          "Produced by `bench/engine_speed.py`.", "",
          f"Median over the {summary['both_ok']} models both engines pruned: prunekit "
          f"{summary['median_prunekit_s']:.3f} s, "
          f"Torch-Pruning {summary['median_tp_s']:.3f} s (ratio of medians {summary['ratio_of_medians']:.2f}); "
          f"median per-model ratio prunekit/TP {summary['median_ratio']:.2f}. A model whose Torch-Pruning result "
          "fails to run counts as a Torch-Pruning failure. The machine was shared with other jobs (15-minute load "
          f"average {load if load is not None else '?'} on 2 cores at the end of the run); both engines ran in the "
          "same process, one after the other."
          if summary["both_ok"] else "No model was pruned by both engines.", "",
          "| model | prunekit s | Torch-Pruning s | ratio | prunekit params | TP params | note |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        pk, t = r.get("prunekit_s"), r.get("tp_s")
        note = "; ".join(x for x in (r.get("prunekit_error"), r.get("tp_error") and f"TP: {r['tp_error']}",
                                     r.get("error")) if x).replace("|", "/")
        md.append(f"| {r['model']} | {pk and f'{pk:.3f}' or '-'} | {t and f'{t:.3f}' or '-'} | "
                  f"{f'{pk / t:.2f}' if pk and t else '-'} | {r.get('prunekit_params', '-')} | "
                  f"{r.get('tp_params', '-')} | {note} |")
    return "\n".join(md) + "\n" + render_footer(result)

if __name__ == "__main__":
    main()
