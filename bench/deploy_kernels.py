"""CPU kernels for deployment: sparse CSR/BSR Linear layers vs dense, and ONNX Runtime int8 vs fp32.

Table 1 (sparse kernels): for each Linear shape (out × in) × sparsity × mask pattern (single weights
or the ``block1x8`` / ``block4x4`` / ``block16x16`` granularities) × batch size, the weight is pruned
with prunekit's unstructured pruner (random scores: a random pattern of that shape), and the dense
layer and every applicable sparse kernel of :data:`prunekit.export.KERNELS` (the ones
:func:`prunekit.export.sparsify_for_cpu` chooses from) are timed alternately, run by run, on one
torch thread; the row gives the medians and the best kernel's speed-up. To keep the run bounded,
each kernel is first timed once (after one warm-up run) and only those within 3× of the fastest go on
to the repeated runs.

Table 2 (whole model): LeNet-300-100 (random init) pruned to 90/95/98% with global L1 masks, turned
into sparse kernels by :func:`prunekit.export.sparsify_for_cpu` for batch 1 and 256 (each layer timed
both ways, replaced only where faster), then the masked and the sparse model timed side by side; the
row gives the layers replaced and the largest output difference to the masked model.

Table 3 (ONNX Runtime, skipped with ``--no-ort``: bench/deploy.py measures ONNX Runtime on trained models):
LeNet-300-100 and resnet_mini (random init: latency only, no accuracy) on
28×28 inputs, exported with :func:`prunekit.export.export_onnx` (verified), quantised to int8 static
QDQ (per-channel, calibrated on 256 random inputs) and dynamic, and the three files timed side by
side in ONNX Runtime with one intra-op thread at batch 1 and 256.

Tables 1 and 2 rank and compare by CPU time (``time.process_time`` per call, one thread,
:func:`prunekit.export.time_runners`), the clock that barely moves when other processes share the CPU; wall times
are recorded beside it.

    OMP_NUM_THREADS=1 .venv/bin/python bench/deploy_kernels.py      # bench/results/deploy_kernels.{json,md}
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from _common import render_footer, write_results  # bench/ is sys.path[0] when run as a script
from torch import nn

from prunekit.export import (
    KERNELS,
    SparseLinear,
    compare_onnx_latency,
    export_onnx,
    quantize_onnx,
    sparsify_for_cpu,
    time_runners,
)
from prunekit.export.onnx_export import plain_copy
from prunekit.export.sparse import bsr_blocksize, torch_threads
from prunekit.models import build_model
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner

SHAPES = [(300, 784), (100, 300), (1024, 1024), (4096, 4096)]  # (out, in): LeNet-300-100's two, square ones
SPARSITIES = [0.8, 0.9, 0.95, 0.98]
PATTERNS = ["element", "block1x8", "block4x4", "block16x16"]
BATCHES = [1, 64, 256]
#: int8 modes per model: dynamic int8 turns convolutions into ConvInteger, measured ~18x slower than fp32
#: for resnet_mini at batch 1 here (12.6 vs 0.70 ms), so it is timed for the Linear model only.
ORT_MODES = {"lenet300": ("static", "dynamic"), "resnet_mini": ("static",)}


def _pruned(out_f: int, in_f: int, sparsity: float, pattern: str, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(in_f, out_f)
    pruner = UnstructuredPruner(nn.Sequential(layer), UnstructuredConfig(importance="random", allocation="uniform",
                                                                         granularity=pattern, seed=seed))
    pruner.prune_to(sparsity)
    pruner.make_permanent()
    return layer.eval()


@torch.no_grad()
def kernel_cell(layer: nn.Linear, sparsity: float, batch: int, repeats: int) -> dict:
    """Dense and the sparse kernels for one layer at one batch size, timed side by side."""
    w = layer.weight.detach()
    block = bsr_blocksize(w, 0.9 * sparsity)
    kernels = {k: SparseLinear(w, layer.bias, k, block) for k in KERNELS.names()
               if (KERNELS.get(k).layout == "csr" or block is not None)
               and (KERNELS.get(k).call != "addmv" or batch == 1)}  # addmv is the addmm path beyond batch 1
    x = torch.randn(1, w.shape[1])
    want = layer(x.expand(batch, -1))
    for k, m in kernels.items():
        assert torch.allclose(m(x.expand(batch, -1)), want, atol=1e-4), k  # never time a wrong kernel
    xb = x.expand(batch, -1).contiguous()
    once = {k: t.cpu_ms for k, t in time_runners({k: partial(m, xb) for k, m in kernels.items()}, batch=batch,
                                                  threads=1, warmup=1, repeats=1).items()}
    kept = [k for k in kernels if once[k] <= 3 * min(once.values())]
    runners = {"dense": partial(layer, xb), **{k: partial(kernels[k], xb) for k in kept}}
    times = time_runners(runners, batch=batch, threads=1, warmup=1, repeats=repeats)
    dense = times.pop("dense")
    ms = {k: t.median_ms for k, t in times.items()}
    cpu = {k: t.cpu_ms for k, t in times.items()}
    best = min(cpu, key=cpu.get)  # ranked by CPU time: wall time on a shared machine grows with the load
    return {"batch": batch, "dense_ms": dense.median_ms, "kernels_ms": ms, "dense_cpu_ms": dense.cpu_ms,
            "kernels_cpu_ms": cpu, "screened_out": sorted(set(once) - set(kept)), "best": best,
            "blocksize": block if best.startswith("bsr") else None, "sparse_ms": ms[best], "sparse_cpu_ms": cpu[best],
            "speedup": dense.cpu_ms / cpu[best], "clock": "process_cpu",
            "weight_sparsity": float((w == 0).float().mean())}


def kernel_table(shapes, sparsities, patterns, batches, repeats: int) -> list[dict]:
    rows = []
    for out_f, in_f in shapes:
        for s in sparsities:
            for p in patterns:
                layer = _pruned(out_f, in_f, s, p, seed=0)
                for b in batches:
                    reps = repeats if out_f * in_f * b < 1024 * 1024 * 64 else max(3, repeats // 4)
                    rows.append({"shape": [out_f, in_f], "sparsity": s, "pattern": p,
                                 **kernel_cell(layer, s, b, reps), "loadavg": os.getloadavg()[0]})
                    r = rows[-1]
                    print(f"{out_f}x{in_f} {s:.0%} {p:10s} b{b:<3d} dense {r['dense_ms']:.3f} ms, {r['best']} "
                          f"{r['sparse_ms']:.3f} ms: {r['speedup']:.2f}x", flush=True)
    return rows


def model_table(sparsities, batches, repeats: int) -> list[dict]:
    rows = []
    for s in sparsities:
        torch.manual_seed(0)
        model = build_model("lenet300", (1, 28, 28), 10).eval()
        UnstructuredPruner(model, UnstructuredConfig(allocation="global")).prune_to(s)
        x = torch.randn(8, 1, 28, 28)
        for b in batches:
            res = sparsify_for_cpu(model, b, x, repeats=repeats)
            # the baseline is the masked model as deployed: masks folded in, no mask hooks, dense kernels
            xb = x[:1].expand(b, *x.shape[1:]).contiguous()
            masked_model = plain_copy(model, fold_bn=False)
            t = time_runners({"masked": partial(masked_model, xb), "sparse": partial(res.model, xb)}, batch=b,
                             threads=1, repeats=repeats)
            masked, sparse = t["masked"], t["sparse"]
            rows.append({"model": "lenet300", "sparsity": s, "batch": b, "masked_ms": masked.median_ms,
                         "sparse_ms": sparse.median_ms, "masked_cpu_ms": masked.cpu_ms,
                         "sparse_cpu_ms": sparse.cpu_ms, "clock": "process_cpu",
                         "speedup": masked.cpu_ms / sparse.cpu_ms,
                         "replaced": res.replaced(), "max_abs_diff": res.max_abs_diff,
                         "decisions": [d.to_dict() for d in res.decisions], "loadavg": os.getloadavg()[0]})
            print(f"lenet300 {s:.0%} b{b}: masked {masked.median_ms:.3f} ms, sparse {sparse.median_ms:.3f} ms, "
                  f"replaced {res.replaced()}", flush=True)
    return rows


def ort_table(modes: dict[str, tuple[str, ...]], batches: list[int], repeats: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in modes:
            torch.manual_seed(0)
            model = build_model(name, (1, 28, 28), 10).eval()
            calib = torch.randn(256, 1, 28, 28)
            fp32 = export_onnx(model, calib[:8], Path(tmp) / f"{name}.onnx", exporter="torchscript")
            files = {"fp32": fp32.path}
            for mode in modes[name]:
                files[f"int8_{mode}"] = quantize_onnx(fp32.path, Path(tmp) / f"{name}.{mode}.onnx", mode,
                                                      calibration=calib).path
            sizes = {k: os.path.getsize(v) for k, v in files.items()}
            for b in batches:
                lat = compare_onnx_latency(list(files.values()), calib[:1], batch=b, threads=1, repeats=repeats)
                ms = {k: t.median_ms for k, t in zip(files, lat, strict=True)}
                rows.append({"model": name, "batch": b, "latency_ms": ms, "size_bytes": sizes,
                             "speedup": {k: ms["fp32"] / v for k, v in ms.items()}, "export_max_rel": fp32.max_rel,
                             "exporter": fp32.exporter, "opset": fp32.opset, "loadavg": os.getloadavg()[0]})
                print(name, b, {k: round(v, 3) for k, v in ms.items()}, flush=True)
    return rows


def kernel_table_lines(rows: list[dict]) -> list[str]:
    """The sparse-kernel table (also embedded in bench/results/deploy.md). Rows measured with the CPU-time clock
    (``clock: process_cpu``) give CPU ms, wall ms in brackets, and the speed-up by CPU time."""
    cpu = bool(rows) and rows[0].get("clock") == "process_cpu"
    if cpu:
        head = ["Speed-up = dense median CPU time / fastest sparse kernel's median CPU time (`time.process_time` per "
                "call, 1 thread, each timed call after an untimed one so that every kernel finds its weights in cache; "
                "the median wall time in brackets); `best` is that kernel (BSR block in brackets); `load` is the "
                "1-minute load average when the row was measured.", "",
                "| out×in | sparsity | pattern | batch | dense CPU ms (wall) | sparse CPU ms (wall) | best | speed-up "
                "| load |", "|---|---|---|---|---|---|---|---|---|"]
    else:
        head = ["Speed-up = dense median / fastest sparse kernel's median; `best` is that kernel (BSR block in "
                "brackets); `load` is the 1-minute load average when the row was measured.", "",
                "| out×in | sparsity | pattern | batch | dense ms | sparse ms | best | speed-up | load |",
                "|---|---|---|---|---|---|---|---|---|"]
    out = list(head)
    for r in rows:
        best = r["best"] + (f" [{r['blocksize']}]" if r.get("blocksize") else "")
        if cpu:
            times = (f"{r['dense_cpu_ms']:.3f} ({r['dense_ms']:.3f}) | {r['sparse_cpu_ms']:.3f} "
                     f"({r['sparse_ms']:.3f})")
        else:
            times = f"{r['dense_ms']:.3f} | {r['sparse_ms']:.3f}"
        out.append(f"| {r['shape'][0]}×{r['shape'][1]} | {r['sparsity']:.0%} | {r['pattern']} | {r['batch']} | "
                   f"{times} | {best} | {r['speedup']:.2f}× | {r['loadavg']:.1f} |")
    return out


def render(result: dict) -> str:
    """deploy_kernels.md from its JSON."""
    out = ["# CPU deployment kernels", "",
           "## Sparse Linear kernels vs dense (torch, 1 thread, timed side by side)", "",
           *kernel_table_lines(result["kernels"])]
    out += ["", "## Whole model: LeNet-300-100, masked vs `sparsify_for_cpu` (torch, 1 thread, side by side)", "",
            "`masked ms`: the masked model with its masks folded in (dense kernels, zeros stored)"
            + ("; CPU ms with wall ms in brackets, speed-up by CPU time." if result.get("models", [{}])[0].get("clock")
               else "."), "",
            "| sparsity | batch | masked ms | sparse ms | speed-up | layers replaced | max abs diff | load |",
            "|---|---|---|---|---|---|---|---|"]
    for r in result.get("models", []):
        replaced = ", ".join(f"`{n}`" for n in r["replaced"]) or "none"
        times = (f"{r['masked_cpu_ms']:.3f} ({r['masked_ms']:.3f}) | {r['sparse_cpu_ms']:.3f} ({r['sparse_ms']:.3f})"
                 if r.get("clock") else f"{r['masked_ms']:.3f} | {r['sparse_ms']:.3f}")
        out.append(f"| {r['sparsity']:.0%} | {r['batch']} | {times} | "
                   f"{r['speedup']:.2f}× | {replaced} | {r['max_abs_diff']:.1e} | {r['loadavg']:.1f} |")
    if not result.get("onnxruntime"):
        return "\n".join(out) + "\n" + render_footer(result)
    out += ["", "## ONNX Runtime: fp32 vs int8 (1 intra-op thread, three sessions timed side by side)", "",
            "Random-init models (latency only; accuracy is measured by `prunekit.export.evaluate_onnx` on "
            "trained models). int8 static: QDQ, per-channel int8 weights, uint8 activations, 256 random calibration "
            "inputs.", "",
            "| model | batch | fp32 ms | int8 static ms | int8 dynamic ms | static speed-up | dynamic speed-up | "
            "sizes fp32 / static / dynamic (KB) | load |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result.get("onnxruntime", []):
        ms = {k: f"{v:.3f}" for k, v in r["latency_ms"].items()}
        sp = {k: f"{v:.2f}×" for k, v in r["speedup"].items()}
        kb = {k: f"{v / 1e3:.0f}" for k, v in r["size_bytes"].items()}
        modes = ("int8_static", "int8_dynamic")
        out.append(f"| {r['model']} | {r['batch']} | {ms['fp32']} | " + " | ".join(ms.get(m, "–") for m in modes)
                   + " | " + " | ".join(sp.get(m, "–") for m in modes) + f" | {kb['fp32']} / "
                   + " / ".join(kb.get(m, "–") for m in modes) + f" | {r['loadavg']:.1f} |")
    return "\n".join(out) + "\n" + render_footer(result)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=12, help="timed runs per kernel (a quarter for the largest)")
    ap.add_argument("--ort-repeats", type=int, default=30)
    ap.add_argument("--shapes", default=",".join(f"{o}x{i}" for o, i in SHAPES), help="out×in list, e.g. 300x784")
    ap.add_argument("--name", default="deploy_kernels")
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime table (bench/deploy.py measures "
                                                           "ONNX Runtime on trained models)")
    args = ap.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    start = time.perf_counter()
    with torch_threads(1):
        kernels = kernel_table(shapes, SPARSITIES, PATTERNS, BATCHES, args.repeats)
        models = model_table([0.9, 0.95, 0.98], [1, 256], args.repeats)
        ort = [] if args.no_ort else ort_table(ORT_MODES, [1, 256], args.ort_repeats)
    result = {"kernels": kernels, "models": models, "onnxruntime": ort, "seconds": time.perf_counter() - start,
              "settings": {"sparsities": SPARSITIES, "patterns": PATTERNS, "batches": BATCHES, "repeats": args.repeats,
                           "ort_repeats": args.ort_repeats}}
    write_results(args.name, result, render)


if __name__ == "__main__":
    sys.exit(main())
