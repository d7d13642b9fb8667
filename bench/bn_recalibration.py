"""BatchNorm re-estimation after one-shot unstructured pruning (``prune.recalibrate_bn``).

For each BN model, seed and sparsity: train dense once, then prune copies one-shot per layer (L1
magnitude) with and without re-estimating the BatchNorm statistics on 256 training images, and
fine-tune each for the same epochs. Records validation accuracy right after pruning and test
accuracy after fine-tuning.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bn_recalibration.py
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics

import torch
from _common import render_footer, train_dense, write_results  # bench/ is sys.path[0] when run as a script

from prunekit.data import load_dataset
from prunekit.pipeline.methods.masks import ScheduleSpec, run_schedule
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
from prunekit.training import TrainConfig

SETUPS = {"resnet_mini/digits": ("resnet_mini", "digits", TrainConfig(epochs=4, lr=0.05)),
          "cnn1d/mnist1d": ("cnn1d", "mnist1d", TrainConfig(epochs=8, lr=0.05))}


def run(args) -> list[dict]:
    rows = []
    for label, (model_name, data_name, dense_cfg) in SETUPS.items():
        data = load_dataset(data_name)
        for seed in args.seeds:
            dense, dense_acc = train_dense(model_name, data, dense_cfg, seed)
            pick = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))
            for target in args.targets:
                for n in (0, args.recalibrate):
                    model = copy.deepcopy(dense)
                    cfg = UnstructuredConfig(importance="l1", allocation="uniform", seed=seed)
                    pruner = UnstructuredPruner(model, cfg)
                    ft = TrainConfig(epochs=args.ft_epochs, lr=dense_cfg.lr / 10)
                    steps = run_schedule(model, data, pruner, ScheduleSpec(target, "one_shot"), ft, seed,
                                         progress=False, recalibration=data.x_train[pick[:n]] if n else None)
                    row = {"setup": label, "seed": seed, "target": target, "recalibrate_bn": n, "dense_acc": dense_acc,
                           "after_pruning_val": steps[0]["val_accuracy_pruned"],
                           "after_finetune_test": steps[0]["test_accuracy"]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def render(result: dict) -> str:
    """bn_recalibration.md from its JSON."""
    rows, args = result["rows"], argparse.Namespace(**result["args"])

    def ms(v: list[float]) -> str:
        sd = f" ± {100 * statistics.stdev(v):.2f}" if len(v) > 1 else ""
        return f"{100 * statistics.mean(v):.2f}{sd}"

    lines = ["# BatchNorm re-estimation after one-shot pruning", "",
             f"L1 magnitude, same sparsity in every layer, one shot; {args.ft_epochs} fine-tuning epoch(s) at a 10× "
             f"lower LR; seeds {args.seeds}; mean ± std (%). `recalibrate_bn`: training images on which BatchNorm "
             "statistics are re-estimated right after pruning (0: off). Produced by "
             f"`bench/bn_recalibration.py` (command below).", "",
             "| setup | sparsity | recalibrate_bn | dense test | val right after pruning | test after fine-tuning |",
             "|---|---|---|---|---|---|"]
    keys = sorted({(r["setup"], r["target"], r["recalibrate_bn"]) for r in rows})
    for setup, target, n in keys:
        sel = [r for r in rows if (r["setup"], r["target"], r["recalibrate_bn"]) == (setup, target, n)]
        lines.append(f"| {setup} | {target:.0%} | {n} | {ms([r['dense_acc'] for r in sel])} | "
                     f"{ms([r['after_pruning_val'] for r in sel])} | {ms([r['after_finetune_test'] for r in sel])} |")
    return "\n".join(lines) + "\n" + render_footer(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9])
    ap.add_argument("--recalibrate", type=int, default=256)
    ap.add_argument("--ft-epochs", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = run(args)
    write_results("bn_recalibration", {"args": vars(args), "rows": rows}, render)


if __name__ == "__main__":
    main()
