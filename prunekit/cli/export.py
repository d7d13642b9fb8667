"""``prunekit export RUN_DIR``: the model a run saved, exported and verified in ONNX Runtime."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from prunekit.export import QUANT_MODES

    p = sub.add_parser("export", help="export a run's saved model (ONNX, optionally int8), verified in ONNX Runtime",
                       description="Exports the model saved in RUN_DIR (by `prunekit run`), checks ONNX Runtime's "
                                   "outputs against PyTorch's, optionally quantises it to int8, and measures its "
                                   "accuracy (the run's test split) and latency in ONNX Runtime. A text run (hf: "
                                   "model) is exported with its pruned head counts: inputs input_ids and "
                                   "attention_mask, outputs the logits and the sentence embedding. Needs the deploy "
                                   "extra: pip install 'prunekit[deploy]'.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `prunekit run`")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default: onnx)")
    p.add_argument("--int8", choices=QUANT_MODES.names(),
                   help="also quantise to int8: static (CNNs; calibrated on the training split) or dynamic "
                        "(Linear-heavy and transformer models)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/onnx); written whole or not at all")
    p.add_argument("--force", action="store_true", help="replace an output directory that holds files")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads for the timing")
    p.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"],
                   help="torch's ONNX exporter (auto: dynamo, then TorchScript if dynamo fails or does not match)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prunekit.pipeline.deploy import export_run

    rep = export_run(args.run_dir, args.format, int8=args.int8, out=args.out, force=args.force, threads=args.threads,
                     exporter=args.exporter)
    d = rep["deployed"]
    lat = ", ".join(f"batch {b}: {ms:.3f} ms" for b, ms in d["latency_ms"].items())
    diffs = ", ".join(f"max rel diff {e['max_rel']:.1e} ({e['exporter']}, opset {e['opset']})"
                      for e in rep["exports"].values())
    quality = [f"accuracy {d['accuracy']:.2%}"] if d.get("accuracy") is not None else []
    if d.get("cosine_to_dense") is not None:  # a text run: the embedding against the saved PyTorch model's
        quality.append(f"embedding cosine {d['cosine_to_dense']:.4f} to PyTorch")
    print(f"exported {d['path']} ({d['backend']}): {', '.join(quality) or 'no accuracy (no labels)'} in ONNX "
          f"Runtime, {lat}, {d['size_bytes']:,} bytes; export check: {diffs}")
    return 0
