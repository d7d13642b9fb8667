"""Measures a recipe's latency table on this machine, K times, and their elementwise minimum.

A table depends on the model's shapes, the recipe's limits (min_channels, round_to, max_ratio) and
export, and the machine: measured once while the machine is quiet it can be passed to any later run
as ``structured.latency_table``. Each table's raw timings are the fastest of ``--repeats`` rounds;
the combined table takes, per entry, the fastest over all K tables (contention only adds time) and
refits the non-increasing curves.

    OMP_NUM_THREADS=1 .venv/bin/python bench/latency_table.py --tables 2 --repeats 10 \
        --out bench/results/latency_tables/resnet_mini_b256
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import write_json  # bench/ is sys.path[0] when run as a script

from prunekit.allocation.api import latency_table_for
from prunekit.allocation.latency import LatencyTable, _non_increasing
from prunekit.data import load_dataset
from prunekit.graph import DependencyGraph
from prunekit.models import build_model
from prunekit.pipeline import load_recipe


def fastest(tables: list[LatencyTable]) -> LatencyTable:
    dense = min(t.dense_ms for t in tables)
    measured = {g: {n: min(t.measured[g][n] for t in tables) for n in tables[0].measured[g]}
                for g in tables[0].measured}
    return LatencyTable(tables[0].batch, dense, {g: _non_increasing({0: dense, **v}) for g, v in measured.items()},
                        measured)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/structured-resnet-mnist.yaml")
    ap.add_argument("--tables", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", required=True, help="path prefix: PREFIX_quiet1.json … and PREFIX_min.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    r = load_recipe(args.recipe)
    data = load_dataset(r.data.name)
    graph = DependencyGraph.build(build_model(r.model.name, data.input_shape, data.num_classes), data.x_train[:1])
    inf = r.measure.inference
    cfg = r.prune.options.allocation_config(r.seed, inf if inf.fold_bn or inf.channels_last else None)
    cfg = replace(cfg, cost="latency", latency_weight=None, latency_passes=1, latency_repeats=args.repeats)
    tables = []
    for k in range(args.tables):
        t0, load = time.time(), os.getloadavg()
        tables.append(latency_table_for(graph, cfg))
        note = {"seconds": round(time.time() - t0, 1), "load_before": load, "load_after": os.getloadavg()}
        write_json(Path(f"{args.out}_quiet{k + 1}.json"), {**tables[-1].to_dict(), "note": note})
        print(note, tables[-1].dense_ms, flush=True)
    write_json(Path(f"{args.out}_min.json"), fastest(tables).to_dict())


if __name__ == "__main__":
    main()
