"""Every single-weight criterion, side by side, for unstructured pruning of trained models.

For each model and seed: train dense once; for each criterion and sparsity, prune a copy one-shot
to that sparsity in every layer (scope ``layer``: the same sparsity per layer, so criteria whose
scales differ between layers compare on equal terms), record test accuracy straight after pruning
(the criterion alone) and after a short fine-tune (the same budget for all). Data-driven criteria
score on 512 training images. ``random`` is the control, ``l1`` the magnitude baseline.

    .venv/bin/python bench/weight_criteria.py                 # 2 models × 3 seeds × 3 sparsities
    .venv/bin/python bench/weight_criteria.py --quick         # 1 seed, lenet300, 1 sparsity
    .venv/bin/python bench/weight_criteria.py --report        # markdown again from the JSON
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from _common import render_footer, train_dense, write_results  # bench/ is sys.path[0] when run as a script

from prunekit.data import load_dataset
from prunekit.importance import Calibration, get
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
from prunekit.training import TrainConfig, evaluate, train

CRITERIA = ["random", "l1", "gradient", "taylor", "hessian", "apoz", "mean_activation", "mi", "bn_folded", "fpgm",
            "loss_change"]
SETUPS = {"lenet300": ("mnist", TrainConfig(epochs=15, lr=0.05, weight_decay=5e-4)),
          "cnn1d": ("mnist1d", TrainConfig(epochs=15, lr=0.05, weight_decay=5e-4))}


def prune_one(dense, data, criterion, sparsity, args, seed) -> dict:
    model = copy.deepcopy(dense)
    cal = Calibration.from_data(data.x_train, data.y_train, args.calibration, seed)
    pruner = UnstructuredPruner(model, UnstructuredConfig(importance=criterion, allocation="uniform", seed=seed),
                                calibration=(cal.x, cal.y))
    t = time.perf_counter()
    pruner.prune_to(sparsity)
    score_s = time.perf_counter() - t
    before_ft = evaluate(model, data.x_test, data.y_test).accuracy
    train(model, data, TrainConfig(epochs=args.ft_epochs, lr=args.ft_lr, weight_decay=5e-4), seed=seed,
          progress=False)
    return {"sparsity": pruner.sparsity(), "accuracy_pruned": before_ft,
            "accuracy_finetuned": evaluate(model, data.x_test, data.y_test).accuracy, "score_seconds": score_s}


def run(args) -> dict:
    rows, skipped = [], {}
    for name in args.models:
        dataset, cfg = SETUPS[name]
        data = load_dataset(dataset)
        for seed in args.seeds:
            dense, dense_acc = train_dense(name, data, cfg, seed)
            for criterion in args.criteria:
                for s in args.sparsities:
                    try:
                        r = prune_one(dense, data, criterion, s, args, seed)
                    except Exception as e:  # e.g. bn_scale on a model without BatchNorm: reported, not hidden
                        skipped[(name, criterion)] = f"{type(e).__name__}: {e}"
                        break
                    rows.append({"model": name, "seed": seed, "criterion": criterion, "target": s,
                                 "dense_accuracy": dense_acc, **r})
                    print(f"{name} s{seed} {criterion:>15} {s:.2f}: {r['accuracy_pruned']:.3f} → "
                          f"{r['accuracy_finetuned']:.3f} ({r['score_seconds']:.1f}s)", flush=True)
    return {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows,
            "skipped": [{"model": m, "criterion": c, "reason": why} for (m, c), why in skipped.items()],
            "threads": torch.get_num_threads(),
            "criteria_docs": {c: get(c).doc for c in dict.fromkeys(r["criterion"] for r in rows)}}


def _ms(xs: list[float]) -> str:
    return f"{100 * statistics.mean(xs):.2f} ± {100 * (statistics.stdev(xs) if len(xs) > 1 else 0):.2f}"


def render(result: dict) -> str:
    """weight_criteria.md from its JSON."""
    rows = result["rows"]
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# Single-weight criteria for unstructured pruning of trained models", "",
             f"Test accuracy (%), mean ± std over seeds {seeds}; one-shot pruning to the same sparsity in every "
             "layer (scope `layer`), then the same short fine-tune for every criterion. `pruned` = straight after "
             "pruning (the criterion alone), `fine-tuned` = after it. Produced by `bench/weight_criteria.py`.", "",
             f"Settings: `{json.dumps(result['settings'])}`", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        sel_m = [r for r in rows if r["model"] == model]
        dense = sorted({(r["seed"], r["dense_accuracy"]) for r in sel_m})
        lines += [f"## {model} (dense {_ms([a for _, a in dense])})", ""]
        targets = sorted({r["target"] for r in sel_m})
        head = " | ".join(f"{t:.0%} pruned | {t:.0%} fine-tuned" for t in targets)
        lines += [f"| criterion | {head} | scoring s |", "|---|" + "---|---|" * len(targets) + "---|"]
        for crit in dict.fromkeys(r["criterion"] for r in sel_m):
            cells = []
            for t in targets:
                sel = [r for r in sel_m if r["criterion"] == crit and r["target"] == t]
                cells += [_ms([r["accuracy_pruned"] for r in sel]), _ms([r["accuracy_finetuned"] for r in sel])]
            secs = statistics.median(r["score_seconds"] for r in sel_m if r["criterion"] == crit)
            lines.append(f"| {crit} | " + " | ".join(cells) + f" | {secs:.1f} |")
        lines.append("")
    if result["skipped"]:
        lines += ["Not run:", ""] + [f"- {s['model']} × {s['criterion']}: {s['reason']}" for s in result["skipped"]]
    lines += ["", "Criteria (single-weight forms, as documented in the code that ran):", ""]
    lines += [f"- `{c}`: {doc}" for c, doc in result["criteria_docs"].items()]
    return "\n".join(lines) + "\n" + render_footer(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--criteria", nargs="+", default=CRITERIA)
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.8, 0.9, 0.95])
    ap.add_argument("--calibration", type=int, default=512)
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--ft-lr", type=float, default=0.01)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="weight_criteria")
    args = ap.parse_args()
    if args.quick:
        args.models, args.seeds, args.sparsities = ["lenet300"], [0], [0.9]
    torch.set_num_threads(1)
    result = run(args)
    write_results(args.out, result, render)


if __name__ == "__main__":
    main()
