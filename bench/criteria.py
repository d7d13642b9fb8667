"""Criteria × allocation strategies at several MAC budgets (issue 4, part 6).

For each model/dataset and seed: train dense once (cached under ``runs/criteria_dense/``), score every
group with every criterion on a calibration sample of the training set, measure sensitivity curves for
the criteria that the ``sensitivity`` strategy uses, then for every operating point (1.5×, 2×, 2.5×,
3×, 4× fewer MACs; run 2×, 3×, 4× first) and every (criterion, strategy) pair: copy the dense model,
allocate, prune for real, fine-tune with the same budget (TrainConfig below, LR 10× below the dense
one) and measure test accuracy, MACs, parameters, the validation accuracy before fine-tuning (with
re-estimated BN statistics too when the config's search uses them: the search proxy) and, where the
config lists latency batches, CPU latency (seed 0 only; the resnet config lists none: see criteria.md).
The latency of every point, both configs, is measured afterwards on rebuilt architectures by
``bench/criteria_latency.py``; ``--report`` shows it as speed-up columns when criteria_latency.json exists.

    .venv/bin/python bench/criteria.py --config cnn1d        # writes bench/results/criteria_cnn1d.json
    .venv/bin/python bench/criteria.py --config resnet --seeds 0 --tag _s0    # one process per seed
    .venv/bin/python bench/criteria.py --config resnet --reductions 2.5 --tag _r2.5   # or per point
    .venv/bin/python bench/criteria.py --report              # criteria.{md,json} + criteria.png
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from pathlib import Path

import torch
from _common import RESULTS, write_json  # bench/ is sys.path[0] when run as a script

from prunekit.allocation import AllocationConfig, Budget, allocate
from prunekit.data import load_dataset
from prunekit.data.base import DataSplits
from prunekit.graph import DependencyGraph
from prunekit.importance import Calibration, ImportanceConfig, score_groups
from prunekit.measure import count_macs, count_params, measure_latency
from prunekit.models import build_model
from prunekit.recovery.bn import recalibrated_bn
from prunekit.sensitivity import SensitivityConfig, analyze
from prunekit.structured import prune_groups
from prunekit.training import TrainConfig, evaluate, train

CACHE = Path(__file__).parent.parent / "runs" / "criteria_dense"
REDUCTIONS = (1.5, 2.0, 2.5, 3.0, 4.0)
RUN_ORDER = (2.0, 3.0, 4.0, 1.5, 2.5)  # the targets' points first, so a cut-short run still answers them
ALL = ("l2", "random", "gradient", "taylor", "hessian", "apoz", "mean_activation", "fpgm", "mi", "loss_change")
CONFIGS = {
    "cnn1d": dict(model="cnn1d", data="mnist1d", train=TrainConfig(epochs=12, lr=0.05, batch_size=64),
                  finetune=TrainConfig(epochs=1, lr=0.005, batch_size=64), ft_subset=None,
                  combos=[(c, "uniform") for c in ALL] + [(c, "global") for c in ALL]
                  + [(c, "sensitivity") for c in ("l2", "gradient", "taylor")] + [("l2", "search")],
                  sens=SensitivityConfig(ratios=(0.1, 0.3, 0.5, 0.7, 0.9), max_samples=400), cal=512,
                  search_at=REDUCTIONS, latency_batches=(256, 1),
                  search=dict(population=8, generations=3, proxy_val=200, recalibration=0)),
    "resnet": dict(model="resnet_mini", data="mnist", train=TrainConfig(epochs=4, lr=0.05, batch_size=64),
                   finetune=TrainConfig(epochs=1, lr=0.005, batch_size=64), ft_subset=None,
                   combos=[("random", "uniform"), ("l2", "uniform"), ("taylor", "uniform"), ("taylor", "sensitivity"),
                           ("taylor", "search")],
                   sens=SensitivityConfig(ratios=(0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.9), max_samples=300),
                   cal=512, search_at=REDUCTIONS, latency_batches=(),
                   search=dict(population=8, generations=3, proxy_val=300, recalibration=256)),
}


def _subset(data: DataSplits, n: int | None, seed: int) -> DataSplits:
    if n is None or n >= len(data.x_train):
        return data
    idx = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))[:n]
    return DataSplits(data.name, data.x_train[idx], data.y_train[idx], data.x_val, data.y_val, data.x_test,
                      data.y_test, data.num_classes)


def _dense(cfg: dict, data: DataSplits, seed: int, name: str) -> torch.nn.Module:
    """The trained dense model of this seed, cached under runs/ (the cache key is the training setup)."""
    tc = cfg["train"]
    path = CACHE / f"{name}_{cfg['model']}_e{tc.epochs}_lr{tc.lr:g}_b{tc.batch_size}_s{seed}.pt"
    torch.manual_seed(seed)
    dense = build_model(cfg["model"], data.input_shape, data.num_classes)
    if path.exists():
        dense.load_state_dict(torch.load(path))
    else:
        train(dense, data, tc, seed=seed, progress=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dense.state_dict(), path)
    return dense


def _point(dense, data, cfg, crit, strat, red, scores, sens, seed, latency) -> dict:
    model = copy.deepcopy(dense)
    x1 = data.x_train[:1]
    graph = DependencyGraph.build(model, x1)
    t0 = time.perf_counter()
    sc = cfg["search"]
    xv, yv = data.x_val[:sc["proxy_val"]], data.y_val[:sc["proxy_val"]]
    rec = _subset(data, sc["recalibration"], seed).x_train if sc["recalibration"] else None
    # "sensitivity+bn@0.2": curves measured with BN re-estimated, at most 0.2 from the uniform ratio per group
    base, _, dev = strat.partition("@")
    curves = sens.get((crit, base.endswith("+bn")))
    base = base.removesuffix("+bn")
    alloc = allocate(graph, Budget(macs_kept=1 / red),
                     AllocationConfig(base, population=sc["population"], generations=sc["generations"], seed=seed,
                                      max_deviation=float(dev) if dev else None),
                     crit, sensitivity=curves, scores=scores[crit], proxy_data=(xv, yv), recalibration=rec)
    prune_groups(graph, alloc.plan)
    t_alloc = time.perf_counter() - t0
    proxy = {"val_acc_before_ft": evaluate(model, xv, yv).accuracy}
    if rec is not None:  # the search's proxy for this point: does it predict the fine-tuned accuracy?
        with recalibrated_bn(model, rec):
            proxy["val_acc_before_ft_bn"] = evaluate(model, xv, yv).accuracy
    train(model, _subset(data, cfg["ft_subset"], seed), cfg["finetune"], seed=seed, progress=False)
    row = {"criterion": crit, "strategy": strat, "reduction_target": red, "seed": seed,
           "accuracy": evaluate(model, data.x_test, data.y_test).accuracy,
           "macs": int(count_macs(model, x1).dense), "params": count_params(model).total,
           "alloc_seconds": round(t_alloc, 2), **proxy, "ratios": alloc.to_dict()["ratios"]}
    if latency:
        row["latency_ms"] = {str(b): measure_latency(model, x1, batch=b, repeats=5, warmup=2).median_ms
                             for b in cfg["latency_batches"]}
    return row


def run_config(name: str, seeds: list[int], out: Path, args_only=None, reductions=RUN_ORDER,
               latency_seed: int | None = 0) -> None:
    cfg = CONFIGS[name]
    data = load_dataset(cfg["data"])
    rows, dense_rows = [], []
    for seed in seeds:
        dense = _dense(cfg, data, seed, name)
        dense.eval()
        x1 = data.x_train[:1]
        d = {"seed": seed, "accuracy": evaluate(dense, data.x_test, data.y_test).accuracy,
             "macs": int(count_macs(dense, x1).dense), "params": count_params(dense).total}
        if seed == latency_seed and cfg["latency_batches"]:
            d["latency_ms"] = {str(b): measure_latency(dense, x1, batch=b, repeats=5).median_ms
                               for b in cfg["latency_batches"]}
        dense_rows.append(d)
        print(f"[{name}] seed {seed} dense {d}", flush=True)
        cal = Calibration.from_data(data.x_train, data.y_train, cfg["cal"], seed)
        graph = DependencyGraph.build(dense, x1)
        crits = sorted({c for c, _ in cfg["combos"]})
        scores = {c: score_groups(graph, ImportanceConfig(c, seed=seed), cal) for c in crits}
        rec = _subset(data, 256, seed).x_train
        sens = {(c, bn): analyze(graph, data.x_val, data.y_val, scores[c], cfg["sens"], c,
                                 recalibration=rec if bn else None)
                for c, bn in sorted({(c, "+bn" in s) for c, s in cfg["combos"] if s.startswith("sensitivity")})}
        for red in reductions:
            for crit, strat in cfg["combos"]:
                if args_only and (crit, strat) not in args_only:
                    continue
                if strat == "search" and red not in cfg["search_at"]:
                    continue
                row = _point(dense, data, cfg, crit, strat, red, scores, sens, seed,
                             seed == latency_seed and bool(cfg["latency_batches"]))
                rows.append(row)
                print(f"[{name}] {red}× {crit}/{strat} seed {seed}: acc {row['accuracy']:.4f} "
                      f"macs {row['macs'] / d['macs']:.3f}", flush=True)
                write_json(out, {"config": name, "model": cfg["model"], "data": cfg["data"],
                                           "train": vars(cfg["train"]), "finetune": vars(cfg["finetune"]),
                                           "ft_subset": cfg["ft_subset"], "calibration": cfg["cal"],
                                           "sensitivity_ratios": cfg["sens"].ratios,
                                           "sensitivity_samples": cfg["sens"].max_samples,
                                           "search": cfg["search"], "dense": dense_rows,
                                           "points": rows})


def render(result: dict) -> str:
    """criteria.md from criteria.json (see ``_criteria_report``)."""
    from _criteria_report import render as render_report  # bench/ is sys.path[0] when run as a script

    return render_report(result)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=sorted(CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--tag", default="", help="suffix of the output file, to split seeds over processes")
    ap.add_argument("--latency-seed", type=int, default=0, help="the seed whose points are timed")
    ap.add_argument("--reductions", type=float, nargs="+", default=list(RUN_ORDER),
                    help="MAC reductions to run, in this order (to split one config over processes)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # shared 2-core machine
    RESULTS.mkdir(exist_ok=True)
    if args.report:
        from _criteria_report import write_report  # bench/ is sys.path[0] when run as a script

        write_report(RESULTS, {n: sorted(RESULTS.glob(f"criteria_{n}*.json")) for n in CONFIGS})
        return
    t0 = time.time()
    run_config(args.config, args.seeds, RESULTS / f"criteria_{args.config}{args.tag}.json",
               reductions=args.reductions, latency_seed=args.latency_seed)
    print(f"done in {time.time() - t0:.0f} s on {platform.processor() or platform.machine()}")


if __name__ == "__main__":
    main()
