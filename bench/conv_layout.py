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
import statistics
import time

import torch
from _common import render_footer, write_results  # bench/ is sys.path[0] when run as a script
from torch import nn


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
    write_results("conv_layout", {"args": vars(args), "rows": rows}, render)


def render(result: dict) -> str:
    """conv_layout.md from its JSON."""
    args, rows, load = result["args"], result["rows"], result["provenance"]["loadavg_end"]
    load = "unknown" if load is None else f"{load[0]:.1f}"
    md = ["# 3×3 convolution throughput by channel count and layout (CPU, 1 thread)", "",
          f"Batch {args['batch']}, {args['size']}×{args['size']}, stride 1, `torch.inference_mode`, NCHW and "
          f"channels_last runs interleaved, median of {args['repeats']}. Load average at the end {load} (shared "
          "2-core machine: compare within a row). Produced by `bench/conv_layout.py` (command below).", "",
          "| in → out | GMAC | NCHW ms | NCHW GMAC/s | channels_last ms | channels_last GMAC/s | NCHW / CL time |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['cin']} → {r['cout']} | {r['gmac']:.2f} | {r['nchw_ms']:.1f} | {r['nchw_gmacs']:.1f} | "
                  f"{r['channels_last_ms']:.1f} | {r['channels_last_gmacs']:.1f} | "
                  f"{r['nchw_ms'] / r['channels_last_ms']:.2f} |")
    return "\n".join(md) + "\n" + render_footer(result)

if __name__ == "__main__":
    main()
