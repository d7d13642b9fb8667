"""Structured recipe over seeds and variants: accuracy loss and interleaved CPU speed-up (issue 4).

Runs a structured recipe (default ``recipes/structured-resnet-mnist.yaml``) for every seed and every
variant (recipe keys overridden, e.g. ``distill: recovery.method=distill finetune.epochs=6``). The
dense model of each seed is trained once with the recipe's ``train`` settings and cached under
``--cache``; every variant of that seed starts from it (the recipe then loads it as
``model.checkpoint`` with ``train.epochs: 0``, which is what its own training would have produced).
Each distinct pruned architecture is then timed against the dense one with
:func:`structured_latency.compare` (interleaved, 1 thread, eager and the fold+channels_last export);
``--sessions K`` repeats that K times with fresh model instances, architectures round-robin, and
reports the median session with the min–max of the K speed-ups (on a shared host one session's
speed-up of the same architecture can move by ±20%).

    .venv/bin/python bench/structured_resnet.py --seeds 0 1 2 --variant "base:" \
        --variant "distill: recovery.method=distill" --name resnet-mnist-2x
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch
import yaml
from _common import render_footer, write_results  # bench/ is sys.path[0] when run as a script
from structured_latency import architectures, compare

from prunekit.data import load_dataset
from prunekit.io.checkpoint import save_state_dict
from prunekit.models import build_model
from prunekit.pipeline import parse_recipe, read_yaml, run_recipe
from prunekit.training import TrainConfig, train


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    sets = {}
    for item in rest.split():
        key, _, value = item.partition("=")
        sets[key] = yaml.safe_load(value)
    return name.strip(), sets


def override(raw: dict, sets: dict) -> dict:
    raw = json.loads(json.dumps(raw))
    for key, value in sets.items():
        node, *path, last = [raw, *key.split(".")]
        for k in path:
            node = node.setdefault(k, {})
        node[last] = value
    return raw


def dense_checkpoint(raw: dict, seed: int, cache: Path) -> Path:
    """Trains (once) the dense model exactly as ``run_recipe`` would for ``seed``."""
    path = cache / f"{raw['model']}-{raw['data']}-seed{seed}-{json.dumps(raw['train'], sort_keys=True)}.safetensors"
    if not path.exists():
        data = load_dataset(raw["data"])
        torch.manual_seed(seed)
        model = build_model(raw["model"], data.input_shape, data.num_classes)
        train(model, data, TrainConfig(**raw["train"]), seed=seed, progress=False, desc="dense")
        cache.mkdir(parents=True, exist_ok=True)
        save_state_dict(model.state_dict(), path)
    return path


def run_variant(raw: dict, name: str, sets: dict, seed: int, args) -> dict:
    ckpt = dense_checkpoint(raw, seed, Path(args.cache))
    r = override(raw, {**sets, "seed": seed, "model": {"name": raw["model"], "checkpoint": str(ckpt)},
                       "train.epochs": 0, "measure.latency_batches": [256], "measure.latency_repeats": 3})
    recipe = parse_recipe(r, f"{args.recipe} [{name}]")
    out = Path(args.runs) / args.name / name / f"seed{seed}"
    rep = run_recipe(recipe, out, force=True, progress=False, quiet=True)
    row = {"variant": name, "overrides": sets, "seed": seed, "dense_acc": rep["dense"]["accuracy"],
           "pruned_acc": rep["pruned"]["accuracy"], "drop_pt": rep["accuracy_drop_pt"],
           "macs_reduction": rep["macs_reduction"], "removed": rep["allocation"]["allocation"]["removed"],
           "ratios": rep["allocation"]["allocation"]["ratios"], "report": str(out / "report.json")}
    print(json.dumps({k: v for k, v in row.items() if k not in ("removed", "ratios")}), flush=True)
    return row


def merge_sessions(timings: list[dict]) -> dict:
    """Per mode and batch: the median session's figures, plus every session's speed-up (median of repeats)."""
    out: dict = {}
    for mode, per_batch in timings[0].items():
        out[mode] = {}
        for b in per_batch:
            runs = sorted((t[mode][b] for t in timings), key=lambda t: t["speedup_median"])
            out[mode][b] = {**runs[(len(runs) - 1) // 2], "sessions": [t["speedup_median"] for t in runs]}
    return out


def render(res: dict) -> str:
    """structured_resnet*.md from its JSON."""
    lines = [f"# {res['name']}: structured pruning of {res['model']} on {res['dataset']}", "",
             f"Recipe `{res['recipe']}`, seeds {res['seeds']}; each variant overrides recipe keys. Test split: "
             "1,000 images (1 image = 0.1 pt). Produced by `bench/structured_resnet.py`: "
             f"`{res['command']}`.", "",
             "| variant | overrides | MACs reduction | dense acc (mean) | pruned acc (mean) | drop pt per seed | "
             "mean drop pt |", "|---|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        lines.append(f"| {name} | `{v['overrides']}` | {v['macs_reduction']:.2f}× | {v['dense_acc']:.2%} | "
                     f"{v['pruned_acc']:.2%} | {', '.join(f'{d:+.1f}' for d in v['drops'])} | "
                     f"{v['mean_drop_pt']:.2f} |")
    lines += ["", "CPU latency at batch 256, dense vs pruned architecture (interleaved forwards, 1 thread, "
              "median of the repeats; `eager`: as trained under `torch.no_grad`; `fold+cl`: both models exported "
              "with BatchNorm folded and channels_last, under `torch.inference_mode`). Load average at the end: "
              f"{res['loadavg_end'][0]:.1f}.", "",
              "| architecture (variants) | MACs reduction | mode | dense ms | pruned ms | speed-up (median) | "
              "speed-up (p10) | sessions: speed-up min–max (n) |", "|---|---|---|---|---|---|---|---|"]
    for a in res["latency"] or []:
        for mode, per_batch in a["modes"].items():
            for b, t in per_batch.items():
                runs = t.get("sessions", [t["speedup_median"]])
                lines.append(f"| {a['label']} | {a['macs_reduction']:.2f}× | {mode} (batch {b}) | "
                             f"{t['dense_ms']:.1f} | {t['pruned_ms']:.1f} | {t['speedup_median']:.2f}× | "
                             f"{t['speedup_p10']:.2f}× | {min(runs):.2f}–{max(runs):.2f}× ({len(runs)}) |")
    return "\n".join(lines) + "\n" + render_footer(res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/structured-resnet-mnist.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variant", action="append", default=None, help='"name: key=value key=value"')
    ap.add_argument("--name", default="structured_resnet")
    ap.add_argument("--modes", nargs="*", default=["eager", "fold+cl"], help="none: skip the timing")
    ap.add_argument("--batch", type=int, nargs="+", default=[256])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=1, help="time every architecture this many times, each a fresh "
                    "dense/pruned pair, round-robin; rows give the median session and the min–max")
    ap.add_argument("--cache", default="runs/dense-cache")
    ap.add_argument("--runs", default="runs/bench")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="combine earlier results (e.g. one process per seed) instead of running")
    args = ap.parse_args()
    torch.set_num_threads(1)
    raw = read_yaml(args.recipe)
    if args.merge:
        rows = [r for f in args.merge for v in json.loads(Path(f).read_text())["variants"].values() for r in v["rows"]]
        args.seeds = sorted({r["seed"] for r in rows})
    else:
        rows = [run_variant(raw, n, s, seed, args) for n, s in map(parse_variant, args.variant or ["base:"])
                for seed in args.seeds]
    variants: dict = {}
    for r in rows:
        v = variants.setdefault(r["variant"], {"overrides": r["overrides"], "rows": []})
        v["rows"].append(r)
    for v in variants.values():
        v["drops"] = [r["drop_pt"] for r in v["rows"]]
        v["mean_drop_pt"] = statistics.mean(v["drops"])
        v["dense_acc"] = statistics.mean(r["dense_acc"] for r in v["rows"])
        v["pruned_acc"] = statistics.mean(r["pruned_acc"] for r in v["rows"])
        v["macs_reduction"] = statistics.mean(r["macs_reduction"] for r in v["rows"])
    archs: dict = {}
    for r in rows:
        archs.setdefault(json.dumps(r["removed"], sort_keys=True), []).append(f"{r['variant']}/s{r['seed']}")
    latency: list = []
    sessions: dict = {key: [] for key in archs}
    for session in range(args.sessions if args.modes else 0):  # round-robin: drift hits every architecture
        for key, users in archs.items():
            print(f"session {session + 1}/{args.sessions}: timing architecture of {', '.join(users)}", flush=True)
            dense, pruned, x1 = architectures(raw["model"], raw["data"], json.loads(key))  # fresh instances
            sessions[key].append(compare(dense, pruned, x1, args.batch, args.modes, args.repeats))
    for key, users in archs.items():
        if sessions[key]:
            macs = next(r["macs_reduction"] for r in rows if json.dumps(r["removed"], sort_keys=True) == key)
            latency.append({"label": ", ".join(users), "removed": json.loads(key), "macs_reduction": macs,
                            "modes": merge_sessions(sessions[key])})
    res = {"name": args.name, "recipe": args.recipe, "model": raw["model"], "dataset": raw["data"],
           "seeds": args.seeds, "command": "python " + " ".join(sys.argv), "threads": 1,
           "variants": variants, "latency": latency, "loadavg_end": os.getloadavg()}
    write_results(args.name, res, render)


if __name__ == "__main__":
    main()
