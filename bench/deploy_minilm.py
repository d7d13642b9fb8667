"""Deploying pruned all-MiniLM-L6-v2: dense vs pruned (12 → 6 heads, FFN 1536 → 768), fp32 vs dynamic int8,
PyTorch vs ONNX Runtime, every variant timed side by side at batch 1 and 32 × 128 tokens (1 thread).

The pruned classifier comes from a finished ``minilm-heads-ffn`` run (``--run DIR``: its ``model/`` directory, the
encoder fine-tuned on Rotten Tomatoes, pruned and distilled, and ``head.safetensors``). That directory is written in
the stock transformers layout, where removed heads come back as zero-weight heads (see
:mod:`prunekit.structured.hf`); prunekit's loader removes them again (:func:`prunekit.pipeline.text.load_saved_text`,
as ``prunekit export RUN_DIR`` does; exact: the outputs are checked equal here too) so that every backend computes 6
heads. Without ``--run`` the shipped MiniLM is pruned
here, un-recovered (latency only; its accuracy is not the recipe's).

The dense baseline for latency is the shipped MiniLM with a classification head (same architecture as the run's
fine-tuned dense model, which the run does not save): its accuracy is the run's report (PyTorch, fine-tuned); the
dense rows' own accuracy here is not meaningful and is not shown. ``deploy_onnx`` measures the pruned model in
PyTorch, in ONNX Runtime fp32 and in ONNX Runtime dynamic int8: accuracy on the 1,281 Rotten Tomatoes test
snippets and the mean cosine of each sentence embedding to the pruned PyTorch model's (the fidelity of export and
int8; the run's report gives the pruned model's cosine to the dense one).

    OMP_NUM_THREADS=1 python bench/deploy_minilm.py --run /work/runs/minilm-s0 --repeats 10
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import RESULTS, write_json  # bench/ is sys.path[0] as a script

import prunekit as pk
from prunekit.data import load_dataset
from prunekit.data.tokens import tokenize
from prunekit.export import TextDeploy, deploy_onnx
from prunekit.measure import count_macs, count_params
from prunekit.measure.text import token_example
from prunekit.models.hf import load_text_model

OUT = RESULTS / "deploy_runs" / "minilm.json"


def _heads(model: torch.nn.Module) -> int:
    return sum(layer.attention.self.num_attention_heads for layer in model.encoder.encoder.layer)


def _from_run(run: Path, batch: dict) -> tuple[torch.nn.Module, dict]:
    from safetensors.torch import load_file

    from prunekit.pipeline import load_recipe
    from prunekit.pipeline.text import load_saved_text

    labels = json.loads((run / "labels.json").read_text())["labels"]
    stock = load_text_model(str(run / "model"), "classification", len(labels)).model.eval()  # zero heads padded in
    stock.head.load_state_dict(load_file(str(run / "head.safetensors")))
    model = load_saved_text(run, load_recipe(run / "recipe.yaml", notice=None)).model.eval()  # as prunekit loads it
    with torch.no_grad():
        diff = float((model(**batch) - stock(**batch)).abs().max())
    if diff > 1e-4:
        raise SystemExit(f"removing the zero heads changed the outputs by {diff:.2e}")
    heads = _heads(stock) - _heads(model)
    report = json.loads((run / "report.json").read_text())
    figures = {k: report[k] for k in ("dense", "pruned", "accuracy_drop_pt", "macs_reduction") if k in report}
    for side in ("dense", "pruned"):
        figures[side] = {k: figures[side].get(k) for k in ("accuracy", "cosine_to_dense", "spearman", "params",
                                                           "macs", "layers", "latency_cpu_ms")}
    return model, {"run": str(run), "zero_heads_removed": heads,
                   "max_abs_diff_after_removal": diff, "run_report": figures}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a finished minilm-heads-ffn run directory (model/, head.safetensors)")
    ap.add_argument("--model", default="hf:all-MiniLM-L6-v2")
    ap.add_argument("--sequence", type=int, default=128)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--test", type=int, default=0, help="only the first N test snippets (0: all)")
    ap.add_argument("--exporter", default="auto")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = load_dataset("rotten-tomatoes")
    loaded = load_text_model(args.model, "classification", data.num_classes, args.sequence)
    dense = loaded.model.eval()
    n = args.test or len(data.test.texts)
    enc = tokenize(loaded.tokenizer, data.test.texts[:n], args.sequence)
    labels = data.test.labels[:n]
    batch = enc.collate(list(range(4)))
    if args.run:
        pruned, source = _from_run(args.run, batch)
    else:
        pruned = copy.deepcopy(dense)
        pk.prune_(pruned, pk.StructuredConfig(sparsity=0.5, importance="l2", allocation="uniform",
                                              exclude=pruned.kept_whole()), example_inputs=batch)
        source = {"run": None, "note": "pruned here (l2, uniform, 50% of heads and FFN neurons), not recovered"}
    tok = loaded.tokenizer
    example = token_example(int(dense.encoder.config.vocab_size), args.sequence, tuple(tok.all_special_ids))
    text = TextDeploy(enc, labels, example, args.sequence)
    text.reference = text.embeddings(pruned)  # cosine: fidelity to the pruned PyTorch model
    with tempfile.TemporaryDirectory() as tmp:
        rep = deploy_onnx(pruned, dense, text, tmp, int8="dynamic", threads=1, repeats=args.repeats,
                          batches=[int(b) for b in args.batches.split(",")], exporter=args.exporter)
    for key in ("dense_torch", "dense"):  # the shipped encoder with an untrained head: latency only
        rep["table"][key]["accuracy"] = rep["table"][key]["cosine_to_dense"] = None
    shape = {"dense": {"params": count_params(dense).total, "macs": count_macs(dense, example).dense},
             "pruned": {"params": count_params(pruned).total, "macs": count_macs(pruned, example).dense}}
    res = {"job": "minilm", "model": args.model, "sequence": args.sequence, "test_snippets": n, "source": source,
           "shape": shape, "deploy": {k: rep[k] for k in ("table", "exports", "quantize", "threads")},
           "seconds": time.perf_counter() - start}
    write_json(OUT, res)
    for k, r in rep["table"].items():
        print(k, r["accuracy"], r["cosine_to_dense"], {b: round(v, 3) for b, v in r["cpu_ms"].items()},
              r["size_bytes"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
