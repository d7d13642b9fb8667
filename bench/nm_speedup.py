"""2:4 speed-up with PyTorch's semi-structured sparse tensors (needs a CUDA GPU, compute capability ≥ 8.0).

For each Linear shape (batch × in → out), prunes the weight to 2:4 with prunekit's ``nm`` granularity,
converts it with :func:`prunekit.pruners.nm.to_semi_structured` and times ``F.linear`` dense vs
sparse in fp16 (CUDA events, median of ``--repeats`` after warm-up). Also checks that the outputs agree.

    .venv/bin/python bench/nm_speedup.py            # writes bench/results/nm_speedup.{json,md}
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from _common import render_footer, write_results  # bench/ is sys.path[0] when run as a script
from torch import nn

from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
from prunekit.pruners.nm import to_semi_structured

SHAPES = [(4096, 4096, 4096), (4096, 4096, 11008), (4096, 11008, 4096), (16384, 8192, 8192), (256, 4096, 4096)]


def _time(fn, repeats: int) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


@torch.no_grad()
def measure(batch: int, cin: int, cout: int, repeats: int) -> dict:
    layer = nn.Sequential(nn.Linear(cin, cout, bias=False))
    pruner = UnstructuredPruner(layer, UnstructuredConfig(granularity="nm", nm=(2, 4)))
    pruner.prune_to(0.5)
    pruner.make_permanent()
    layer = layer.half().cuda()
    x = torch.randn(batch, cin, dtype=torch.float16, device="cuda")
    dense_out = layer(x)
    dense_ms = _time(lambda: layer(x), repeats)
    to_semi_structured(layer)
    sparse_out = layer(x)
    sparse_ms = _time(lambda: layer(x), repeats)
    err = float((sparse_out - dense_out).abs().max() / dense_out.abs().max())
    return {"batch": batch, "in": cin, "out": cout, "dense_ms": dense_ms, "sparse_ms": sparse_ms,
            "speedup": dense_ms / sparse_ms, "max_rel_error": err}


def render(result: dict) -> str:
    """nm_speedup.md from its JSON."""
    gpu, rows = result["gpu"], result["rows"]
    lines = [f"# 2:4 semi-structured sparsity speed-up ({gpu}, torch {result['torch']}, fp16)", "",
             "`bench/nm_speedup.py` (command below) — F.linear, median of CUDA-event timings.", "",
             "| batch × in → out | dense ms | 2:4 sparse ms | speed-up | max rel. error |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} × {r['in']} → {r['out']} | {r['dense_ms']:.3f} | {r['sparse_ms']:.3f} | "
                     f"{r['speedup']:.2f}× | {r['max_rel_error']:.1e} |")
    return "\n".join(lines) + "\n" + render_footer(result)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        print("nm_speedup: needs a CUDA GPU with compute capability ≥ 8.0; none here, nothing measured",
              file=sys.stderr)
        return 1
    rows = [measure(b, i, o, args.repeats) for b, i, o in SHAPES]
    write_results("nm_speedup", {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows},
                  render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
