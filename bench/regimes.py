"""When and how to prune, compared at matched sparsity / MACs on the built-in MNIST subset.

LeNet-300-100, seeds 0–2. Every method starts from the same seed's initial weights θ₀; all but the
at-initialisation methods and the lottery ticket also start from the same dense model trained from θ₀.

A. Weights, matched sparsity S (default 95%, i.e. 5% of the weights), global L1 unless stated:
   one-shot (+ F fine-tune epochs), iterative (R rounds × F/R epochs), gradual (cubic, F epochs),
   SNIP and SynFlow at init (then E epochs from scratch, the dense budget), lottery ticket (R rounds
   of E epochs, rewind to θ₀) and its control (same mask, random re-init, E epochs).
B. Neurons ("filters" of Linear layers), matched MACs: 70% of the neurons of both hidden layers
   (fc3 kept whole), 3.6× fewer MACs after the dead neurons are removed: hard filter pruning + fine-tune,
   hard + distillation from the dense model, soft filter pruning (He et al. 2018), gradual structured
   (cubic schedule, filter masks) — each with F epochs.

    .venv/bin/python bench/regimes.py                       # the full run (3 seeds)
    .venv/bin/python bench/regimes.py --seeds 0 --quick     # smoke test
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
from _common import RESULTS, provenance_line, render_footer, write_results  # bench/ is sys.path[0] as a script

from prunekit.data import load_dataset
from prunekit.models import build_model
from prunekit.pipeline.methods.lottery import LotteryConfig, run_lottery
from prunekit.pipeline.methods.masks import ScheduleSpec, run_schedule
from prunekit.pipeline.methods.soft_filter import soft_filter_train
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
from prunekit.pruners.channels import structural_macs
from prunekit.pruners.init_pruning import prune_at_init
from prunekit.pruners.lottery import WeightSnapshot
from prunekit.pruners.soft_filter import SoftFilterConfig, hard_filter_pruner
from prunekit.recovery import DistillConfig, RecoveryConfig, recovery_loss
from prunekit.training import TrainConfig, evaluate, train


def _acc(model, data) -> float:
    return evaluate(model, data.x_test, data.y_test).accuracy


def _fresh(data, seed):
    torch.manual_seed(seed)
    return build_model("lenet300", data.input_shape, data.num_classes)


def weight_regimes(data, dense, init, args, seed) -> dict:
    """Part A: every method at sparsity ``args.sparsity``; returns test accuracy per method."""
    cfg = UnstructuredConfig(importance="l1", allocation="global")
    out = {}
    for name, schedule, steps, epochs in [("one_shot", "one_shot", 1, args.ft_epochs),
                                          ("iterative", "iterative", args.rounds, args.ft_epochs // args.rounds),
                                          ("gradual", "gradual", 20, args.ft_epochs)]:
        model = copy.deepcopy(dense)
        pruner = UnstructuredPruner(model, cfg)
        run_schedule(model, data, pruner, ScheduleSpec(args.sparsity, schedule, steps),
                     TrainConfig(epochs=epochs, lr=args.ft_lr), seed, progress=False)
        out[name] = {"accuracy": _acc(model, data), "sparsity": pruner.sparsity()}
    batch = (data.x_train[:256], data.y_train[:256])
    for crit, iters in (("snip", 1), ("synflow", 100)):
        model = _fresh(data, seed)
        pruner = UnstructuredPruner(model, UnstructuredConfig(importance=crit, allocation="global"), calibration=batch)
        prune_at_init(pruner, args.sparsity, iters)
        train(model, data, args.dense_cfg, seed=seed, progress=False)
        out[crit] = {"accuracy": _acc(model, data), "sparsity": pruner.sparsity()}
    return {**out, **lottery_regime(data, dense, init, args, seed)}


def lottery_regime(data, dense, init, args, seed) -> dict:
    """The lottery ticket (rewind to θ₀) and its random re-initialisation control."""
    model = copy.deepcopy(dense)
    pruner = UnstructuredPruner(model, UnstructuredConfig(importance="l1", allocation="global"))
    res = run_lottery(model, data, pruner, args.dense_cfg, LotteryConfig(args.sparsity, args.rounds),
                      init, lambda: build_model("lenet300", data.input_shape, data.num_classes), seed, False)
    return {"lottery_ticket": {"accuracy": _acc(model, data), "sparsity": pruner.sparsity()},
            "lottery_random_reinit": {"accuracy": res.control["accuracy"], "sparsity": res.control["sparsity"]}}


def neuron_regimes(data, dense, args, seed) -> dict:
    """Part B: ``args.ratio`` of the hidden neurons, fc3 whole; structural MACs after removing dead neurons."""
    ft = TrainConfig(epochs=args.ft_epochs, lr=args.ft_lr)
    example = data.x_test[:1]
    out = {}
    for name, method in (("hard_finetune", "finetune"), ("hard_distill", "distill")):
        model = copy.deepcopy(dense)
        pruner = hard_filter_pruner(model, args.ratio, exclude=("5",))
        rc = RecoveryConfig(method, DistillConfig(args.kd_temperature, args.kd_alpha))
        with recovery_loss(model, rc, copy.deepcopy(dense).eval()) as loss_fn:
            train(model, data, ft, seed=seed, progress=False, loss_fn=loss_fn)
        out[name] = _structural(model, pruner, data, example)
    model = copy.deepcopy(dense)
    pruner, _ = soft_filter_train(model, data, ft, SoftFilterConfig(args.ratio, ("5",)), seed, False)
    out["soft_filter"] = _structural(model, pruner, data, example)
    model = copy.deepcopy(dense)
    pruner = UnstructuredPruner(model, UnstructuredConfig(importance="l2", allocation="uniform", granularity="filter",
                                                          exclude=("5",)))
    run_schedule(model, data, pruner, ScheduleSpec(args.ratio, "gradual", 10), ft, seed, progress=False)
    out["gradual_structured"] = _structural(model, pruner, data, example)
    return out


def _structural(model, pruner, data, example) -> dict:
    pruner.make_permanent()
    s = structural_macs(model, example)
    return {"accuracy": _acc(model, data), "macs": s["macs"], "params": s["params"]}


def run_seed(data, args, seed) -> dict:
    model = _fresh(data, seed)
    init = WeightSnapshot.capture(model)
    train(model, data, args.dense_cfg, seed=seed, progress=False)
    dense_macs = structural_macs(model, data.x_test[:1])["macs"]
    rec = {"seed": seed, "dense": {"accuracy": _acc(model, data), "macs": dense_macs}}
    t = time.perf_counter()
    if "weights" in args.parts:
        rec["weights"] = weight_regimes(data, model, init, args, seed)
    elif "lottery" in args.parts:
        rec["weights"] = lottery_regime(data, model, init, args, seed)
    if "neurons" in args.parts:
        rec["neurons"] = neuron_regimes(data, model, args, seed)
    rec["seconds"] = round(time.perf_counter() - t, 1)
    print(json.dumps(rec), flush=True)
    return rec


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def summarise(runs: list[dict]) -> dict:
    out = {"dense": _stats([r["dense"]["accuracy"] for r in runs]), "weights": {}, "neurons": {}}
    for part in ("weights", "neurons"):
        for method in runs[0].get(part, {}):
            rows = [r[part][method] for r in runs]
            out[part][method] = {"accuracy": _stats([x["accuracy"] for x in rows])}
            for k in ("sparsity", "macs", "params"):
                if k in rows[0]:
                    out[part][method][k] = rows[0][k]
    out["dense_macs"] = runs[0]["dense"]["macs"]
    return out


def _pm(st: dict) -> str:
    return f"{100 * st['mean']:.2f} ± {100 * st['std']:.2f}"


def _ok(c: bool) -> str:
    return "**met**" if c else "**not met**"


def _verdicts(s: dict) -> list[str]:
    out = []
    w, n, dense = s["weights"], s["neurons"], s["dense"]
    if w:
        ticket, ctrl = w["lottery_ticket"]["accuracy"], w["lottery_random_reinit"]["accuracy"]
        gap_dense = 100 * (dense["mean"] - ticket["mean"])
        gap_ctrl = 100 * (ticket["mean"] - ctrl["mean"])
        spread = 100 * max(ticket["std"], ctrl["std"], dense["std"])
        out += [
            f"- Lottery ticket at {100 * (1 - w['lottery_ticket']['sparsity']):.1f}% of the weights vs dense: "
            f"{-gap_dense:+.2f} pt (target: within 0.3 pt below dense) — {_ok(gap_dense <= 0.3)}.",
            f"- Ticket − random re-init of the same mask: {gap_ctrl:+.2f} pt; largest seed std {spread:.2f} pt "
            f"(target: gap > spread) — {_ok(gap_ctrl > spread)}."]
    if not n:
        return out
    kd, fth = n["hard_distill"]["accuracy"]["mean"], n["hard_finetune"]["accuracy"]["mean"]
    soft, hard = n["soft_filter"]["accuracy"]["mean"], fth
    red = s["dense_macs"] / n["hard_finetune"]["macs"]
    ok = _ok
    return out + [
        f"- Distillation − fine-tuning at {red:.2f}× fewer MACs, equal epochs: {100 * (kd - fth):+.2f} pt "
        f"(target: ≥ 0 at ≥ 2×) — {ok(kd >= fth and red >= 2)}.",
        f"- Soft − hard filter pruning at the same MACs: {100 * (soft - hard):+.2f} pt "
        f"(He et al. report soft ≥ hard) — {ok(soft >= hard)}"
        + ("" if soft >= hard else ": on this data soft filter pruning does **not** beat hard pruning") + ".",
    ]


def _render_run(result: dict) -> str:
    s, c = result["summary"], result["config"]
    n_seeds = len(result["runs"])
    lines = ["# Pruning regimes on LeNet-300-100 / built-in MNIST", "",
             f"`{result['command']}` — {n_seeds} seeds ({', '.join(map(str, c['seeds']))}), "
             f"{result['seconds'] / 60:.1f} min on {result['threads']} CPU thread(s). Test accuracy in % "
             f"(mean ± std over seeds) on the 1,000-image test split; dense: **{_pm(s['dense'])}**.", "",
             f"## A. Matched sparsity: {100 * c['sparsity']:.0f}% of the weights removed "
             f"({100 * (1 - c['sparsity']):.0f}% kept)", "",
             f"Dense training E = {c['epochs']} epochs ({c.get('optimizer', 'sgd')}, lr {c.get('lr', 0.05)}, batch "
             f"{c.get('batch_size', 64)}); fine-tuning budget F = {c['ft_epochs']} epochs at lr "
             f"{c['ft_lr']}; {c['rounds']} rounds for iterative and lottery.", "",
             "| method | sparsity | test acc. | Δ vs dense (pt) |", "|---|---|---|---|"]
    for m, r in s["weights"].items():
        delta = 100 * (r["accuracy"]["mean"] - s["dense"]["mean"])
        lines.append(f"| {m} | {100 * r['sparsity']:.2f}% | {_pm(r['accuracy'])} | {delta:+.2f} |")
    if not s["weights"]:
        lines = lines[:4]
    if not s["neurons"]:
        return "\n".join(lines + ["", "## Targets (issue 5)", "", *_verdicts(s), ""])
    lines += ["", f"## B. Matched MACs: {100 * c['ratio']:.0f}% of the hidden neurons removed, dead neurons "
              f"removed physically before counting; F = {c['ft_epochs']} epochs at lr {c['ft_lr']}; distillation "
              f"T = {c['kd_temperature']}, α = {c['kd_alpha']}", "",
              "| method | MACs / sample | MAC reduction | params | test acc. | Δ vs dense (pt) |",
              "|---|---|---|---|---|---|"]
    for m, r in s["neurons"].items():
        delta = 100 * (r["accuracy"]["mean"] - s["dense"]["mean"])
        lines.append(f"| {m} | {r['macs']:,} | {s['dense_macs'] / r['macs']:.2f}× | {r['params']:,} | "
                     f"{_pm(r['accuracy'])} | {delta:+.2f} |")
    lines += ["", "## Targets (issue 5)", "", *_verdicts(s), "",
              "Per-seed numbers are in the JSON next to this file (`runs`).", ""]
    return "\n".join(lines)


def render(result: dict) -> str:
    """regimes*.md from its JSON; ``supplementary``: names of further result files shown after this run's."""
    parts = [_render_run(result)]
    for name in result.get("supplementary", []):
        sub = json.loads((RESULTS / f"{name}.json").read_text())
        _, _, body = _render_run(sub).partition("\n")
        parts.append(f"---\n\n# Supplementary run: `{name}.json`\n{body}\n{provenance_line(sub['provenance'])}\n")
    return "\n".join(parts) + render_footer(result)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sparsity", type=float, default=0.95)
    p.add_argument("--ratio", type=float, default=0.7, help="fraction of hidden neurons removed in part B")
    p.add_argument("--epochs", type=int, default=10, help="E: dense epochs (and per lottery round)")
    p.add_argument("--ft-epochs", type=int, default=10, help="F: fine-tuning budget of every method")
    p.add_argument("--ft-lr", type=float, default=0.01)
    p.add_argument("--lr", type=float, default=0.05, help="dense (and lottery round) learning rate")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--kd-temperature", type=float, default=4.0)
    p.add_argument("--kd-alpha", type=float, default=0.9)
    p.add_argument("--parts", nargs="+", default=["weights", "neurons"], choices=["weights", "lottery", "neurons"],
                   help="lottery: only the ticket and its control of part A")
    p.add_argument("--quick", action="store_true", help="2 epochs everywhere (smoke test)")
    p.add_argument("--out", default="regimes")
    p.add_argument("--supplementary", nargs="+", metavar="NAME", default=[],
                   help="earlier results/NAME.json files whose tables regimes.md shows after this run's")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.ft_epochs, args.rounds = 2, 2, 2
    args.dense_cfg = TrainConfig(epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, batch_size=args.batch_size)
    torch.set_num_threads(1)
    data = load_dataset("mnist")
    t = time.perf_counter()
    runs = [run_seed(data, args, s) for s in args.seeds]
    result = {"command": " ".join([".venv/bin/python bench/regimes.py", *(argv or sys.argv[1:])]), "config": {
        k: v for k, v in vars(args).items() if k != "dense_cfg"}, "runs": runs, "summary": summarise(runs),
        "seconds": round(time.perf_counter() - t, 1), "threads": torch.get_num_threads(),
        "supplementary": args.supplementary}
    write_results(args.out, result, render)


if __name__ == "__main__":
    main()
