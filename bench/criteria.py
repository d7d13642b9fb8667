"""Criteria × allocation strategies at several MAC budgets (issue 4, part 6).

For each model/dataset and seed: train dense once, score every group with every criterion on a
calibration sample of the training set, measure sensitivity curves for the criteria that the
``sensitivity`` strategy uses, then for every operating point (1.5×, 2×, 2.5×, 3×, 4× fewer MACs)
and every (criterion, strategy) pair: copy the dense model, allocate, prune for real, fine-tune
with the same budget (TrainConfig below, LR 10× below the dense one) and measure test accuracy,
MACs, parameters and (seed 0 only) CPU latency at batch 256 and 1.

    .venv/bin/python bench/criteria.py --config cnn1d        # writes bench/results/criteria_cnn1d.json
    .venv/bin/python bench/criteria.py --config resnet
    .venv/bin/python bench/criteria.py --report              # criteria.{md,json} + criteria.png
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from prunekit.allocation import AllocationConfig, Budget, allocate
from prunekit.data import load_dataset
from prunekit.data.base import DataSplits
from prunekit.graph import DependencyGraph
from prunekit.importance import Calibration, ImportanceConfig, score_groups
from prunekit.measure import count_macs, count_params, measure_latency
from prunekit.models import build_model
from prunekit.sensitivity import SensitivityConfig, analyze
from prunekit.structured import prune_groups
from prunekit.training import TrainConfig, evaluate, train

RESULTS = Path(__file__).parent / "results"
REDUCTIONS = (1.5, 2.0, 2.5, 3.0, 4.0)
ALL = ("lp", "random", "gradient", "taylor", "hessian", "apoz", "mean_activation", "fpgm", "mi", "loss_change")
CONFIGS = {
    "cnn1d": dict(model="cnn1d", data="mnist1d", train=TrainConfig(epochs=12, lr=0.05, batch_size=64),
                  finetune=TrainConfig(epochs=1, lr=0.005, batch_size=64), ft_subset=None,
                  combos=[(c, "uniform") for c in ALL] + [(c, "global") for c in ALL]
                  + [(c, "sensitivity") for c in ("lp", "gradient", "taylor")] + [("lp", "search")],
                  sens=SensitivityConfig(ratios=(0.1, 0.3, 0.5, 0.7, 0.9), max_samples=400), cal=512,
                  search_at=REDUCTIONS, latency_batches=(256, 1)),
    "resnet": dict(model="resnet_mini", data="mnist", train=TrainConfig(epochs=2, lr=0.05, batch_size=64),
                   finetune=TrainConfig(epochs=1, lr=0.005, batch_size=64), ft_subset=640,
                   combos=[("random", "uniform"), ("lp", "uniform"), ("taylor", "global"),
                           ("gradient", "sensitivity"), ("taylor", "sensitivity"), ("lp", "search")],
                   sens=SensitivityConfig(ratios=(0.25, 0.5, 0.75), max_samples=200), cal=256,
                   search_at=(2.0,), latency_batches=(1,)),
}


def _subset(data: DataSplits, n: int | None, seed: int) -> DataSplits:
    if n is None or n >= len(data.x_train):
        return data
    idx = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))[:n]
    return DataSplits(data.name, data.x_train[idx], data.y_train[idx], data.x_val, data.y_val, data.x_test,
                      data.y_test, data.num_classes)


def _point(dense, data, cfg, crit, strat, red, scores, sens, seed, latency) -> dict:
    model = copy.deepcopy(dense)
    x1 = data.x_train[:1]
    graph = DependencyGraph.build(model, x1)
    t0 = time.perf_counter()
    alloc = allocate(graph, Budget(macs=1 / red), AllocationConfig(strat, population=8, generations=3, seed=seed),
                     crit, sensitivity=sens.get(crit), proxy_data=(data.x_val[:200], data.y_val[:200]),
                     scores=scores[crit])
    prune_groups(graph, alloc.plan)
    t_alloc = time.perf_counter() - t0
    train(model, _subset(data, cfg["ft_subset"], seed), cfg["finetune"], seed=seed, progress=False)
    row = {"criterion": crit, "strategy": strat, "reduction_target": red, "seed": seed,
           "accuracy": evaluate(model, data.x_test, data.y_test).accuracy,
           "macs": int(count_macs(model, x1).dense), "params": count_params(model).total,
           "alloc_seconds": round(t_alloc, 2)}
    if latency:
        row["latency_ms"] = {str(b): measure_latency(model, x1, batch=b, repeats=5, warmup=2).median_ms
                             for b in cfg["latency_batches"]}
    return row


def run_config(name: str, seeds: list[int], out: Path, args_only=None, reductions=REDUCTIONS,
               latency_seed: int | None = 0) -> None:
    cfg = CONFIGS[name]
    data = load_dataset(cfg["data"])
    rows, dense_rows = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        dense = build_model(cfg["model"], data.input_shape, data.num_classes)
        train(dense, data, cfg["train"], seed=seed, progress=False)
        dense.eval()
        x1 = data.x_train[:1]
        d = {"seed": seed, "accuracy": evaluate(dense, data.x_test, data.y_test).accuracy,
             "macs": int(count_macs(dense, x1).dense), "params": count_params(dense).total}
        if seed == latency_seed:
            d["latency_ms"] = {str(b): measure_latency(dense, x1, batch=b, repeats=5).median_ms
                               for b in cfg["latency_batches"]}
        dense_rows.append(d)
        print(f"[{name}] seed {seed} dense {d}", flush=True)
        cal = Calibration.from_data(data.x_train, data.y_train, cfg["cal"], seed)
        graph = DependencyGraph.build(dense, x1)
        crits = sorted({c for c, _ in cfg["combos"]})
        scores = {c: score_groups(graph, ImportanceConfig(c, seed=seed), cal) for c in crits}
        sens = {c: analyze(graph, data.x_val, data.y_val, scores[c], cfg["sens"], c)
                for c in sorted({c for c, s in cfg["combos"] if s == "sensitivity"})}
        for red in reductions:
            for crit, strat in cfg["combos"]:
                if args_only and (crit, strat) not in args_only:
                    continue
                if strat == "search" and red not in cfg["search_at"]:
                    continue
                row = _point(dense, data, cfg, crit, strat, red, scores, sens, seed, seed == latency_seed)
                rows.append(row)
                print(f"[{name}] {red}× {crit}/{strat} seed {seed}: acc {row['accuracy']:.4f} "
                      f"macs {row['macs'] / d['macs']:.3f}", flush=True)
                out.write_text(json.dumps({"config": name, "model": cfg["model"], "data": cfg["data"],
                                           "train": vars(cfg["train"]), "finetune": vars(cfg["finetune"]),
                                           "ft_subset": cfg["ft_subset"], "calibration": cfg["cal"],
                                           "sensitivity_ratios": cfg["sens"].ratios, "dense": dense_rows,
                                           "points": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=sorted(CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--tag", default="", help="suffix of the output file, to split seeds over processes")
    ap.add_argument("--latency-seed", type=int, default=0, help="the seed whose points are timed")
    args = ap.parse_args()
    torch.set_num_threads(1)  # shared 2-core machine
    RESULTS.mkdir(exist_ok=True)
    if args.report:
        from bench._criteria_report import write_report

        write_report(RESULTS, {n: sorted(RESULTS.glob(f"criteria_{n}*.json")) for n in CONFIGS})
        return
    t0 = time.time()
    run_config(args.config, args.seeds, RESULTS / f"criteria_{args.config}{args.tag}.json",
               latency_seed=args.latency_seed)
    print(f"done in {time.time() - t0:.0f} s on {platform.processor() or platform.machine()}")


if __name__ == "__main__":
    main()
