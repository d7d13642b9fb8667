"""Re-measures dense vs pruned CPU latency of a structured report's architecture, interleaved.

On a shared machine a dense measurement taken minutes before the pruned one is not comparable. This
rebuilds both architectures (the pruned one by removing the report's per-group unit counts from a
fresh model: latency depends on the shapes only), then alternates single timed forwards of the two
so both see the same load; the speed-up is the ratio of medians (and of 10th percentiles).

Each ``--modes`` entry prepares both models alike before timing them:

- ``eager``: the model as trained, under ``torch.no_grad`` (BatchNorm kept, NCHW);
- ``fold``, ``cl``, ``fold+cl``: :func:`prunekit.export.prepare_inference` with BatchNorm folded into
  the convolutions and/or channels_last weights and inputs, under ``torch.inference_mode``.

    .venv/bin/python bench/structured_latency.py runs/structured-resnet-mnist/report.json --batch 256 1 \
        --modes eager fold+cl --out bench/results/structured-resnet-mnist/latency_interleaved.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

import torch
from _common import write_json  # bench/ is sys.path[0] when run as a script

from prunekit.data import load_dataset
from prunekit.export import InferenceConfig, prepare_inference
from prunekit.graph import DependencyGraph
from prunekit.measure import compare_latency, count_macs
from prunekit.models import build_model
from prunekit.structured import prune_groups

MODES = {"eager": None, "fold": InferenceConfig(fold_bn=True), "cl": InferenceConfig(channels_last=True),
         "fold+cl": InferenceConfig(fold_bn=True, channels_last=True)}


def architectures(model: str, dataset: str, removed: dict[str, int]):
    """Untrained dense and pruned models (the pruned one loses ``removed[group]`` units per group)."""
    data = load_dataset(dataset)
    dense = build_model(model, data.input_shape, data.num_classes).eval()
    pruned = build_model(model, data.input_shape, data.num_classes).eval()
    x1 = data.x_test[:1]
    graph = DependencyGraph.build(pruned, x1)
    prune_groups(graph, {g: list(range(n)) for g, n in removed.items()})
    return dense, pruned, x1


def compare(dense, pruned, x1, batches: list[int], modes: list[str], repeats: int) -> dict:
    """Interleaved timings of ``dense`` vs ``pruned`` per mode and batch size: {mode: {batch: {...}}}."""
    out: dict = {}
    for mode in modes:
        cfg = MODES[mode]
        pair = (dense, pruned) if cfg is None else (prepare_inference(dense, cfg), prepare_inference(pruned, cfg))
        fmt = torch.contiguous_format if cfg is None else cfg.memory_format
        ctx = torch.no_grad if cfg is None else torch.inference_mode
        out[mode] = {}
        for b in batches:
            with ctx():
                td, tp = compare_latency(pair, x1, batch=b, warmup=1, repeats=repeats, memory_format=fmt)
            md, mp, p10d, p10p = td.median_ms, tp.median_ms, td.p10_ms, tp.p10_ms
            out[mode][str(b)] = {"dense_ms": md, "pruned_ms": mp, "speedup_median": md / mp,
                                 "speedup_p10": p10d / p10p, "repeats": repeats}
            print(f"{mode:8s} batch {b}: dense {md:.2f} ms, pruned {mp:.2f} ms, speed-up {md / mp:.2f}× "
                  f"(p10 {p10d / p10p:.2f}×)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 1])
    ap.add_argument("--modes", nargs="+", default=["eager", "fold+cl"], choices=list(MODES))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    command = "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "unset") + " .venv/bin/python " + shlex.join(
        ["bench/structured_latency.py", *sys.argv[1:]])
    loadavg_start = os.getloadavg()
    rep = json.loads(Path(args.report).read_text())
    dense, pruned, x1 = architectures(rep["model"], rep["dataset"], rep["allocation"]["allocation"]["removed"])
    macs = (count_macs(dense, x1).dense, count_macs(pruned, x1).dense)
    assert macs[1] == rep["pruned"]["macs"], (macs, rep["pruned"]["macs"])
    result = {"report": args.report, "command": command, "loadavg_start": loadavg_start,
              "threads": 1, "macs": macs, "macs_reduction": macs[0] / macs[1],
              "modes": compare(dense, pruned, x1, args.batch, args.modes, args.repeats),
              "loadavg_end": os.getloadavg()}
    if args.out:
        with contextlib.suppress(FileNotFoundError):
            Path(args.out).unlink()
        write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
