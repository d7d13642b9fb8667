"""Reproduces Han et al. 2015 Table 1 (LeNet-300-100, LeNet-5) on the built-in MNIST subset.

For each model and seed: train dense, then prune iteratively (global L1 magnitude, prune → fine-tune
rounds) through increasing compression rates, recording test accuracy at each operating point. The
control prunes the same dense model with random scores to the same sparsities, fine-tuned the same way.

Compression = all parameters / non-zero parameters (biases stay dense and count).

    .venv/bin/python bench/han.py                  # full run: 2 models × 3 seeds × 6 points
    .venv/bin/python bench/han.py --quick          # 1 seed, lenet300 only
    .venv/bin/python bench/han.py --models lenet5 --criteria random --control-ft-lr 0.01 --out han_lenet5_control
    .venv/bin/python bench/han.py --merge results/han.json results/han_lenet5_control.json --out han
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from _common import provenance_line, render_footer, train_dense, write_results  # bench/ is sys.path[0]

from prunekit.data import load_dataset
from prunekit.measure import count_params
from prunekit.pipeline.methods.masks import ScheduleSpec, run_schedule
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
from prunekit.training import TrainConfig, evaluate

DENSE = {"lenet300": TrainConfig(epochs=15, lr=0.05, weight_decay=5e-4),
         "lenet5": TrainConfig(epochs=12, lr=0.05, weight_decay=5e-4)}


def sparsity_for(model, compression: float) -> float:
    """Weight sparsity at which all-params / non-zero-params equals ``compression``."""
    total = count_params(model).total
    weights = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2)
    keep = total / compression - (total - weights)
    return 1.0 - keep / weights


def trajectory(model, data, criterion, points, args, seed):
    pruner = UnstructuredPruner(model, UnstructuredConfig(importance=criterion, allocation="global", seed=seed))
    lr = args.control_ft_lr if criterion == "random" and args.control_ft_lr else args.ft_lr
    ft = TrainConfig(epochs=args.ft_epochs, lr=lr, weight_decay=args.ft_wd, augment=args.augment)
    out = []
    for c in points:
        target = sparsity_for(model, c)
        run_schedule(model, data, pruner, ScheduleSpec(target, "iterative", args.steps), ft, seed,
                     progress=False)
        params = count_params(model)
        out.append({"compression_target": c, "compression": params.total / params.nonzero,
                    "sparsity": pruner.sparsity(), "ft_lr": lr,
                    "test_accuracy": evaluate(model, data.x_test, data.y_test).accuracy,
                    "val_accuracy": evaluate(model, data.x_val, data.y_val).accuracy})
    return out


def run(args) -> dict:
    data = load_dataset("mnist")
    rows = []
    for name in args.models:
        for seed in args.seeds:
            t = time.perf_counter()
            cfg = DENSE[name]
            cfg = TrainConfig(epochs=args.dense_epochs or cfg.epochs, lr=cfg.lr, augment=args.augment,
                              weight_decay=args.dense_wd if args.dense_wd is not None else cfg.weight_decay)
            dense, dense_acc = train_dense(name, data, cfg, seed)
            for criterion in args.criteria:
                traj = trajectory(copy.deepcopy(dense), data, criterion, args.points, args, seed)
                for r in traj:
                    rows.append({"model": name, "seed": seed, "criterion": criterion,
                                 "dense_accuracy": dense_acc, **r})
            print(f"{name} seed {seed}: dense {dense_acc:.4f} "
                  f"({time.perf_counter() - t:.0f}s) "
                  + " ".join(f"{r['compression_target']}x:{r['test_accuracy']:.3f}" for r in rows
                             if r["model"] == name and r["seed"] == seed and r["criterion"] == "l1"),
                  flush=True)
    return {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows,
            "threads": torch.get_num_threads()}


def _lr(row: dict, settings: dict) -> float:
    """The fine-tuning lr of a row (rows written before lr was recorded per row used ``settings['ft_lr']``)."""
    return row.get("ft_lr", settings["ft_lr"])


def _own_dense(rnd: list[dict], base: list[dict]) -> str:
    """Where the control ran on its own dense models (a re-run), the dense accuracy its Δ is taken from."""
    dense = lambda rs: sorted((r["seed"], r["dense_accuracy"]) for r in rs)
    if dense(rnd) == dense(base):
        return ""
    values = [a for _, a in dense(rnd)]
    return f" (vs its dense {100 * statistics.mean(values):.2f})"


def render(result: dict) -> str:
    """han.md (and han_lenet300.md) from its JSON."""
    rows, settings = result["rows"], result["settings"]
    lines = ["# Han et al. 2015 Table 1 on built-in MNIST (5,000-image subset)", "",
             "Test accuracy (1,000 images), mean ± std over seeds "
             f"{sorted({r['seed'] for r in rows})}. Δ = pruned − dense, in points. "
             "Global L1 magnitude, iterative prune → fine-tune; control = random scores, same "
             "sparsity and fine-tuning schedule, at the fine-tuning learning rate in the `random lr` column "
             "(L1 at the `L1 lr` column's).", "",
             f"Settings: `{json.dumps(settings)}`", "",
             "| model | compression | sparsity | dense acc. | L1 acc. | Δ L1 (pt) | L1 lr | random acc. | "
             "Δ random (pt) | random lr |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ms = lambda xs: f"{100 * statistics.mean(xs):.2f} ± {100 * (statistics.stdev(xs) if len(xs) > 1 else 0):.2f}"
    lrs = lambda rs: "/".join(f"{lr:g}" for lr in sorted({_lr(r, settings) for r in rs}))
    delta = lambda rs: [r["test_accuracy"] - r["dense_accuracy"] for r in rs]
    for model in dict.fromkeys(r["model"] for r in rows):
        for c in dict.fromkeys(r["compression_target"] for r in rows):
            sel = {crit: [r for r in rows if r["model"] == model and r["compression_target"] == c
                          and r["criterion"] == crit] for crit in ("l1", "random")}
            l1, rnd = sel["l1"], sel["random"]
            base = l1 or rnd  # a control-only run has no L1 rows
            if not base:
                continue
            lines.append(
                f"| {model} | {statistics.mean(r['compression'] for r in base):.1f}× | "
                f"{100 * statistics.mean(r['sparsity'] for r in base):.2f}% | "
                f"{ms([r['dense_accuracy'] for r in base])} | "
                + (f"{ms([r['test_accuracy'] for r in l1])} | {ms(delta(l1))} | {lrs(l1)} | " if l1 else "– | – | – | ")
                + (f"{ms([r['test_accuracy'] for r in rnd])} | {ms(delta(rnd))}{_own_dense(rnd, base)} | {lrs(rnd)} |"
                   if rnd else "– | – | – |"))
    lines += ["", "## Targets (issue 2)", ""]
    for model, c, limit in (("lenet300", 12, 0.3), ("lenet300", 50, 0.3), ("lenet300", 100, 2.0),
                            ("lenet5", 12, 0.3)):
        sel = [r for r in rows if r["model"] == model and r["compression_target"] == c and r["criterion"] == "l1"]
        if sel:
            drop = 100 * statistics.mean(r["dense_accuracy"] - r["test_accuracy"] for r in sel)
            verdict = "met" if drop <= limit else f"**not met** (gap {drop - limit:.2f} pt)"
            lines.append(f"- {model} at {c}×: mean loss {drop:.2f} pt (target ≤ {limit} pt): {verdict}")
    if result.get("sources"):  # a merge: which run measured which rows
        lines += ["", "## Measured in", ""] + [
            f"- `{src['file']}` (models {', '.join(dict.fromkeys(src['settings']['models']))}, criteria "
            f"{', '.join(src['settings']['criteria'])}, seeds {src['settings']['seeds']}): "
            + (provenance_line(src["provenance"]) if src.get("provenance") else "no provenance recorded.")
            for src in result["sources"]]
    return "\n".join(lines) + "\n" + render_footer(result)


def merge(files: list[str]) -> dict:
    """One result from earlier result files: a row of a later file replaces the same (model, seed, criterion,
    compression) row of an earlier one, so a re-measured control replaces the old one."""
    parts = [json.loads(Path(f).read_text()) for f in files]
    rows: dict = {}
    for part in parts:
        for r in part["rows"]:
            rows[(r["model"], r["seed"], r["criterion"], r["compression_target"])] = \
                {"ft_lr": part["settings"]["ft_lr"], **r}
    models = list(dict.fromkeys(m for p in parts for m in p["settings"]["models"]))
    return {"settings": {**parts[0]["settings"], "models": models, "control_ft_lr": None},
            "rows": list(rows.values()), "threads": parts[0]["threads"],
            "sources": [{"file": Path(f).name, "settings": p["settings"], "provenance": p.get("provenance")}
                        for f, p in zip(files, parts, strict=True)],
            "notes": [n for p in parts for n in p.get("notes", [])]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--points", nargs="+", type=float, default=[4, 8, 12, 20, 50, 100])
    ap.add_argument("--criteria", nargs="+", default=["l1", "random"])
    ap.add_argument("--steps", type=int, default=3, help="prune → fine-tune rounds between points")
    ap.add_argument("--ft-epochs", type=int, default=4)
    ap.add_argument("--ft-lr", type=float, default=0.05)
    ap.add_argument("--control-ft-lr", type=float, default=None,
                    help="fine-tuning lr of the random control (default --ft-lr)")
    ap.add_argument("--ft-wd", type=float, default=5e-4)
    ap.add_argument("--dense-epochs", type=int, default=None)
    ap.add_argument("--dense-wd", type=float, default=None)
    ap.add_argument("--augment", default="none", choices=["none", "shift"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="only merge earlier result files (a later file's rows replace the same rows of an earlier)")
    ap.add_argument("--out", default="han")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.models, args.seeds = ["lenet300"], [0]
    result = merge(args.merge) if args.merge else run(args)
    write_results(args.out, result, render)


if __name__ == "__main__":
    main()
