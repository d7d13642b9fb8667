"""Re-measures dense vs pruned CPU latency of a structured report's architecture, interleaved.

On a shared machine a dense measurement taken minutes before the pruned one is not comparable. This
rebuilds both architectures (the pruned one by removing the report's per-group unit counts from a
fresh model: latency depends on the shapes only), then alternates single timed forwards of the two
so both see the same load; the speed-up is the ratio of medians (and of 10th percentiles).

    .venv/bin/python bench/structured_latency.py runs/structured-resnet-mnist/report.json --batch 256 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from prunekit.data import load_dataset
from prunekit.graph import DependencyGraph
from prunekit.measure import count_macs
from prunekit.models import build_model
from prunekit.structured import prune_groups


@torch.no_grad()
def interleaved(a, b, x, repeats: int) -> tuple[list[float], list[float]]:
    ta, tb = [], []
    for m in (a, b):
        m(x)
    for _ in range(repeats):
        for m, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            m(x)
            out.append((time.perf_counter() - t0) * 1e3)
    return ta, tb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 1])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rep = json.loads(Path(args.report).read_text())
    data = load_dataset(rep["dataset"])
    dense = build_model(rep["model"], data.input_shape, data.num_classes).eval()
    pruned = build_model(rep["model"], data.input_shape, data.num_classes).eval()
    x1 = data.x_test[:1]
    graph = DependencyGraph.build(pruned, x1)
    prune_groups(graph, {g: list(range(n)) for g, n in rep["allocation"]["allocation"]["removed"].items()})
    macs = (count_macs(dense, x1).dense, count_macs(pruned, x1).dense)
    assert macs[1] == rep["pruned"]["macs"], (macs, rep["pruned"]["macs"])
    result = {"report": args.report, "threads": 1, "macs": macs, "batches": {}}
    for b in args.batch:
        x = x1.expand(b, *x1.shape[1:]).contiguous()
        td, tp = interleaved(dense, pruned, x, args.repeats)
        md, mp = statistics.median(td), statistics.median(tp)
        p10 = lambda t: statistics.quantiles(t, n=10)[0]
        result["batches"][str(b)] = {"dense_ms": md, "pruned_ms": mp, "speedup_median": md / mp,
                                     "speedup_p10": p10(td) / p10(tp), "repeats": args.repeats}
        print(f"batch {b}: dense {md:.2f} ms, pruned {mp:.2f} ms, speed-up {md / mp:.2f}× "
              f"(p10 {p10(td) / p10(tp):.2f}×)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
