"""Why pruned CNNs lag their MACs on a CPU: 3×3 convolution throughput by channel count and memory layout.

Times one 3×3 convolution (stride 1, padding 1) at batch 256 for every (in, out) channel pair, in
NCHW (``torch.contiguous_format``) and in ``torch.channels_last``, the two layouts interleaved,
1 thread, ``torch.inference_mode``; reports the median time and GMAC/s. Writes
bench/results/conv_layout.{json,md}.

    .venv/bin/python bench/conv_layout.py --size 28 --channels 8 16 24 32 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

RESULTS = Path(__file__).parent / "results"


def bench(cin: int, cout: int, size: int, batch: int, repeats: int) -> dict:
    conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False).eval()
    conv_cl = nn.Conv2d(cin, cout, 3, 1, 1, bias=False).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, cin, size, size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {"nchw": [], "channels_last": []}
    with torch.inference_mode():
        conv(x), conv_cl(x_cl)
        for _ in range(repeats):
            for key, m, inp in (("nchw", conv, x), ("channels_last", conv_cl, x_cl)):
                t0 = time.perf_counter()
                m(inp)
                times[key].append((time.perf_counter() - t0) * 1e3)
    gmac = batch * size * size * cin * cout * 9 / 1e9
    row = {"cin": cin, "cout": cout, "gmac": gmac}
    for key, t in times.items():
        row[f"{key}_ms"] = statistics.median(t)
        row[f"{key}_gmacs"] = gmac / statistics.median(t) * 1e3
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--channels", type=int, nargs="+", default=[8, 16, 24, 32, 64])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for cin in args.channels:
        for cout in args.channels:
            rows.append(bench(cin, cout, args.size, args.batch, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "conv_layout.json").write_text(json.dumps({"args": vars(args), "loadavg_end": load, "rows": rows},
                                                         indent=1))
    md = ["# 3×3 convolution throughput by channel count and layout (CPU, 1 thread)", "",
          f"Batch {args.batch}, {args.size}×{args.size}, stride 1, `torch.inference_mode`, NCHW and channels_last "
          f"runs interleaved, median of {args.repeats}. Load average at the end {load[0]:.1f} (shared 2-core "
          f"machine: compare within a row). Produced by `bench/conv_layout.py {' '.join(sys.argv[1:])}`.", "",
          "| in → out | GMAC | NCHW ms | NCHW GMAC/s | channels_last ms | channels_last GMAC/s | NCHW / CL time |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['cin']} → {r['cout']} | {r['gmac']:.2f} | {r['nchw_ms']:.1f} | {r['nchw_gmacs']:.1f} | "
                  f"{r['channels_last_ms']:.1f} | {r['channels_last_gmacs']:.1f} | "
                  f"{r['nchw_ms'] / r['channels_last_ms']:.2f} |")
    (RESULTS / "conv_layout.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
