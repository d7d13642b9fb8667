"""Per-group ratios each allocation strategy chooses on the MNIST-1D CNN (why sensitivity collapses at 4×).

Uses the dense model of one seed (cached by ``bench/criteria.py``), the ``lp`` criterion and the
``cnn1d`` config's sensitivity settings; prints and writes the single-group loss-rise curves and the
ratios of uniform, global and sensitivity allocation at each MAC target. No fine-tuning.

    .venv/bin/python bench/criteria_ratios.py --seed 2    # writes bench/results/criteria-ratios_cnn1d_s2.json
"""

from __future__ import annotations

import argparse

import torch
from _common import write_json
from criteria import CONFIGS, REDUCTIONS, RESULTS, _dense  # bench/ is on sys.path when run as a script

from prunekit.allocation import AllocationConfig, Budget, allocate
from prunekit.data import load_dataset
from prunekit.graph import DependencyGraph
from prunekit.importance import Calibration, ImportanceConfig, score_groups
from prunekit.sensitivity import analyze


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--criterion", default="l2")
    args = ap.parse_args()
    torch.set_num_threads(1)  # shared 2-core machine
    cfg, data = CONFIGS["cnn1d"], load_dataset("mnist1d")
    model = _dense(cfg, data, args.seed, "cnn1d").eval()
    graph = DependencyGraph.build(model, data.x_train[:1])
    cal = Calibration.from_data(data.x_train, data.y_train, cfg["cal"], args.seed)
    scores = score_groups(graph, ImportanceConfig(args.criterion, seed=args.seed), cal)
    sens = analyze(graph, data.x_val, data.y_val, scores, cfg["sens"], args.criterion)
    out = {"seed": args.seed, "criterion": args.criterion, "dense_val_loss": sens.dense_loss,
           "curves": {g: {"size": c.size, "ratios": c.ratios, "loss_rise": [x - sens.dense_loss for x in c.loss]}
                      for g, c in sens.curves.items()}, "allocations": {}}
    for red in REDUCTIONS:
        for strat in ("uniform", "global", "sensitivity"):
            a = allocate(graph, Budget(macs_kept=1 / red), AllocationConfig(strat), args.criterion, sensitivity=sens,
                         scores=scores)
            out["allocations"][f"{red:g}x/{strat}"] = {"ratios": a.ratios, "params_kept": a.predicted["params"]}
            print(f"{red:g}× {strat:11s} params {a.predicted['params']:6d} ratios "
                  + " ".join(f"{g}:{r:.2f}" for g, r in a.ratios.items()))
    path = RESULTS / f"criteria-ratios_cnn1d_s{args.seed}.json"  # not criteria_cnn1d*: the report globs that
    write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
