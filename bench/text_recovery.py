"""all-MiniLM-L6-v2 on Rotten Tomatoes: recovery after pruning (fine-tune vs distillation), 3 seeds, on a fixed
subset of the training snippets; one-shot 2:4 (Wanda, SparseGPT) on the same fine-tuned models; latency of dense
and pruned at 1 thread and at every thread.

Per seed (the seed sets the classification head's initialisation, the batch order and the calibration sample):

1. fine-tune the pretrained encoder + a linear head on ``--train-subset`` training snippets (the same seeded
   subset for every seed) for ``--epochs``: the dense model;
2. remove ``--sparsity`` of the attention heads and FFN neurons (L2 criterion), ``uniform`` (every layer alike) and
   ``global`` (one ranking per kind of unit over all layers), then recover each for ``--recover-epochs`` on the same
   snippets by fine-tuning on the labels or by distillation from the dense model (logits at T=2, α=0.5, plus
   the sentence embedding's cosine);
3. prune the dense model's encoder blocks to 2:4 with Wanda and SparseGPT (128 snippets, padding left out), then
   distil the Wanda model with the masks held, save it with ``save_hf`` and read the files back: the 2:4 pattern
   in every pruned weight, and sentence-transformers' embedding of the saved directory against prunekit's.

Metrics: RT test accuracy (1,281 snippets), Lee Spearman (test split), mean cosine of each embedding to the dense
model's (RT test snippets). Results are written after every seed (a cut-off run keeps what it finished).

``--latency``: the pretrained encoder pruned at ``--sparsity`` (uniform and global), timed with the dense model
run by run at batch 1 and 32 × 128 tokens, at each of ``--thread-counts``; wall and CPU time.

    OMP_NUM_THREADS=1 nice -n 5 python bench/text_recovery.py --seeds 0 1 2
    python bench/text_recovery.py --latency --thread-counts 1 2
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import RESULTS, provenance, render_footer, write_json  # bench/ is sys.path[0] when run as a script

from prunekit import Calibration, LayerwiseConfig, StructuredConfig, prune_
from prunekit.data import load_dataset
from prunekit.data.tokens import tokenize
from prunekit.measure import count_params
from prunekit.measure.latency import compare_latency
from prunekit.measure.macs import count_macs
from prunekit.measure.text import mean_cosine, pair_cosines, spearman, token_example
from prunekit.models.hf import load_text_model
from prunekit.pruners import prune_layerwise
from prunekit.pruners.granularity import is_nm
from prunekit.recovery import DistillConfig
from prunekit.recovery.text import distill_text
from prunekit.structured import save_hf
from prunekit.training import TrainConfig
from prunekit.training.text import embed, predict, train_text

MODEL = "hf:all-MiniLM-L6-v2"
NAME = "text_recovery"


class Texts:
    """The tokenised subset of training snippets, the RT test split and the Lee documents."""

    def __init__(self, tok, source: Path, subset: int, test_subset: int, max_length: int) -> None:
        self.tok, self.source = tok, source
        rt, lee = load_dataset("rotten-tomatoes"), load_dataset("lee-sts")
        idx = torch.randperm(len(rt.train), generator=torch.Generator().manual_seed(1234))[:subset]
        self.train = tokenize(tok, [rt.train.texts[i] for i in idx.tolist()], max_length)
        self.train_y = rt.train.labels[idx]
        tdx = torch.randperm(len(rt.test), generator=torch.Generator().manual_seed(4321))[:test_subset]
        self.test = tokenize(tok, [rt.test.texts[i] for i in tdx.tolist()], max_length)
        self.test_y = rt.test.labels[tdx]
        docs = list(dict.fromkeys(lee.test.texts + lee.test.texts_b))
        where = {d: i for i, d in enumerate(docs)}
        self.lee = tokenize(tok, docs, max_length)
        self.lee_a = torch.tensor([where[t] for t in lee.test.texts])
        self.lee_b = torch.tensor([where[t] for t in lee.test.texts_b])
        self.lee_y = lee.test.labels
        self.sizes = {"train_subset": len(self.train), "train_full": len(rt.train), "test": len(self.test),
                      "test_full": len(rt.test),
                      "lee_docs": len(docs), "lee_pairs": len(self.lee_y)}


def metrics(model, t: Texts, dense_emb: torch.Tensor | None) -> tuple[dict, torch.Tensor]:
    """RT test accuracy, Lee Spearman and (given the dense embeddings) the mean cosine to them; one pass over RT
    (the head reads the pooled embedding that the sentence embedding normalises)."""
    model.eval()

    def pooled(**batch):
        return model.pool(model.states(**batch).last_hidden_state, batch["attention_mask"])

    p = predict(model, t.test, 64, fn=pooled)
    with torch.no_grad():
        acc = float((model.head(p).argmax(1) == t.test_y).float().mean())
        e_rt = model.finish(p)
    e_lee = embed(model, t.lee)
    out = {"accuracy": acc, "spearman_lee": spearman(pair_cosines(e_lee[t.lee_a], e_lee[t.lee_b]), t.lee_y)}
    if dense_emb is not None:
        out["cosine_rt"] = mean_cosine(e_rt, dense_emb)
    return out, e_rt


def _cfg(args, epochs: int, lr: float) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=lr, batch_size=32, optimizer="adam", weight_decay=0.0, schedule="cosine")


def _recover(kind: str, student, teacher, t: Texts, args, seed: int) -> float:
    t0 = time.process_time()
    cfg = _cfg(args, args.recover_epochs, args.recover_lr)
    if kind == "finetune":
        train_text(student, t.train, t.train_y, cfg, seed, progress=False)
    else:
        distill_text(student, teacher, t.train, t.train_y, cfg,
                     DistillConfig(temperature=2.0, alpha=0.5, embedding_weight=1.0), seed, progress=False)
    return time.process_time() - t0


def _calibration(t: Texts, n: int, seed: int) -> Calibration:
    idx = torch.randperm(len(t.train), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    batch = t.train.collate(idx)
    return Calibration(batch["input_ids"], None, 16, attention_mask=batch["attention_mask"])


def _check_saved(model, t: Texts) -> dict:
    """Saves the encoder with save_hf, reads the weights back (2:4 in every pruned weight) and compares the
    sentence-transformers embedding of the saved directory with prunekit's embedding of the model."""
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    with tempfile.TemporaryDirectory() as d:
        idx = list(range(4))
        saved = save_hf(copy.deepcopy(model.encoder).eval(), Path(d) / "model", tokenizer=t.tok, source=t.source,
                        example_inputs=t.test.collate(idx))
        w = load_file(str(Path(d) / "model" / "model.safetensors"))
        blocks = [k for k in w if ".layer." in k and k.endswith(".weight") and w[k].dim() == 2]
        texts = [f"snippet {i}" for i in range(8)]
        ours = embed(model, tokenize(t.tok, texts, 128))
        st = SentenceTransformer(str(Path(d) / "model"), device="cpu").encode(texts, convert_to_tensor=True)
        return {"linear_weights": len(blocks), "nm_2_4": sum(is_nm(w[k], (2, 4)) for k in blocks),
                "reload_max_diff": saved.max_abs_diff, "st_max_diff": float((st - ours).abs().max())}


def run_seed(seed: int, args, t: Texts, base) -> dict:
    torch.manual_seed(seed)
    dense = copy.deepcopy(base)
    dense.head.reset_parameters()
    t0 = time.process_time()
    train_text(dense, t.train, t.train_y, _cfg(args, args.epochs, args.lr), seed, progress=False)
    out: dict = {"seed": seed, "dense_train_cpu_s": time.process_time() - t0}
    out["dense"], dense_emb = metrics(dense, t, None)
    example = token_example(dense.encoder.config.vocab_size, args.sequence, ())
    out["dense"].update(params=count_params(dense).total, macs=count_macs(dense, example).dense)
    print(json.dumps({"seed": seed, "dense": out["dense"]}), flush=True)
    rows = []
    for sparsity, allocation in itertools.product(args.sparsity, args.allocations):
        pruned = copy.deepcopy(dense)
        prune_(pruned, StructuredConfig(sparsity=sparsity, importance="l2", allocation=allocation,
                                        exclude=pruned.kept_whole()), example_inputs=example)
        before, _ = metrics(pruned, t, dense_emb)
        shape = {"params": count_params(pruned).total, "macs": count_macs(pruned, example).dense}
        for kind in args.recoveries:
            m = copy.deepcopy(pruned)
            cpu = _recover(kind, m, dense, t, args, seed)
            after, _ = metrics(m, t, dense_emb)
            row = {"variant": f"{sparsity:.0%} {allocation}", "allocation": allocation, "recovery": kind,
                   "before": before, "after": after, "recover_cpu_s": cpu, **shape}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for solver in args.oneshot:
        m = copy.deepcopy(dense)
        t0 = time.process_time()
        rep = prune_layerwise(m, LayerwiseConfig(solver=solver, granularity="nm", nm=(2, 4),
                                                 exclude=("head", "encoder.pooler.*")), _calibration(t, 128, seed))
        before, _ = metrics(m, t, dense_emb)
        row = {"variant": f"2:4 {solver}", "solver": solver, "before": before, "prune_cpu_s": time.process_time() - t0,
               "layers": len(rep.layer_sparsity), "sparsity": rep.sparsity,
               "calibration_tokens": max(rep.tokens.values())}
        if solver == args.oneshot_recover and seed in args.oneshot_recover_seeds:
            row["recover_cpu_s"] = _recover("distill", m, dense, t, args, seed)
            row["recovery"] = "distill"
            rep.masks.make_permanent()
            row["after"], _ = metrics(m, t, dense_emb)
            row["saved"] = _check_saved(m, t)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out["rows"] = rows
    return out


def latency(args) -> dict:
    loaded = load_text_model(args.model, "embedding")
    dense = loaded.model.eval()
    example = token_example(dense.encoder.config.vocab_size, args.sequence, tuple(loaded.tokenizer.all_special_ids))
    models, names = [dense], ["dense"]
    for sparsity, allocation in itertools.product(args.sparsity, args.allocations):
        m = copy.deepcopy(dense)
        prune_(m, StructuredConfig(sparsity=sparsity, importance="l2", allocation=allocation,
                                   exclude=m.kept_whole()), example_inputs=example)
        models.append(m.eval())
        names.append(f"{sparsity:.0%} {allocation}")
    rows = []
    for threads in args.thread_counts:
        torch.set_num_threads(threads)
        for b in (1, 32):
            timed = compare_latency(models, example, batch=b, repeats=args.repeats)
            for n, lat in zip(names, timed, strict=True):
                rows.append({"variant": n, "threads": threads, "batch": b, "wall_ms": lat.median_ms,
                             "cpu_ms": lat.cpu_ms, "load": lat.load_avg, "repeats": lat.repeats})
            print(json.dumps(rows[-len(names):]), flush=True)
    torch.set_num_threads(1)
    macs = {n: count_macs(m, example).dense for n, m in zip(names, models, strict=True)}
    return {"rows": rows, "sequence": args.sequence, "macs": macs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--train-subset", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--recover-epochs", type=int, default=1)
    ap.add_argument("--recover-lr", type=float, default=1e-4)
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5],
                    help="fractions of heads and FFN neurons removed (each one a set of rows)")
    ap.add_argument("--allocations", nargs="*", default=["uniform", "global"])
    ap.add_argument("--recoveries", nargs="*", default=["finetune", "distill"])
    ap.add_argument("--oneshot", nargs="*", default=["wanda", "sparsegpt"])
    ap.add_argument("--oneshot-recover", default="wanda")
    ap.add_argument("--oneshot-recover-seeds", nargs="*", type=int, default=[0],
                    help="seeds whose one-shot model is also distilled and saved")
    ap.add_argument("--test-subset", type=int, default=640, help="RT test snippets evaluated (fixed subset)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--sequence", type=int, default=128, help="tokens per sequence when timing and counting MACs")
    ap.add_argument("--latency", action="store_true", help="time dense vs pruned instead (no training)")
    ap.add_argument("--thread-counts", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS / f"{NAME}.json", help="results JSON (default: bench/results)")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--model", default=MODEL, help="hf:PATH (default all-MiniLM-L6-v2; a tiny one for a smoke test)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    path = args.out
    result = json.loads(path.read_text()) if path.is_file() else {}
    if args.note:
        result["notes"] = args.note
    if args.latency:
        result["latency"] = {**latency(args), "provenance": provenance()}
        _write(path, result)
        return 0
    loaded = load_text_model(args.model, "classification", 2, args.max_length)
    t = Texts(loaded.tokenizer, loaded.directory, args.train_subset, args.test_subset, args.max_length)
    rec = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "sizes": t.sizes,
           "seeds": []}
    for seed in args.seeds:
        rec["seeds"].append(run_seed(seed, args, t, loaded.model))
        result["recovery"] = {**rec, "provenance": provenance()}
        _write(path, result)
    return 0


def _write(path: Path, result: dict) -> None:
    """The JSON (its provenance: this run's) and its page."""
    out = write_json(path, {**{k: v for k, v in result.items() if k != "provenance"}, "provenance": provenance()})
    path.with_suffix(".md").write_text(render(json.loads(json.dumps(out))))


def _ms(vals: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """mean ± sample sd of ``vals`` (× ``scale``); one value alone."""
    v = [x * scale for x in vals]
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{statistics.mean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"


def _recovery_lines(rec: dict) -> list[str]:
    seeds, a = rec["seeds"], rec["args"]
    n, sz = len(seeds), rec["sizes"]
    at = a.get("sparsity", 0.5)
    at = ", ".join(f"{x:.0%}" for x in (at if isinstance(at, list) else [at]))
    lines = [f"## Recovery at {at} of heads and FFN neurons: fine-tune vs distillation ({n} seed{'s' * (n > 1)}: "
             f"{', '.join(str(s['seed']) for s in seeds)})", "",
             f"Dense: all-MiniLM-L6-v2 + a linear head fine-tuned for {a['epochs']} epoch(s) on a fixed subset of "
             f"**{sz['train_subset']:,} of the {sz['train_full']:,} training snippets** (full-data training takes "
             f"25+ min per run on this shared CPU); pruned models recovered for {a['recover_epochs']} epoch(s) on the "
             f"same subset (lr {a['recover_lr']}); distillation: logits at T=2, α=0.5, plus 1 − cos of the sentence "
             f"embedding. RT accuracy on a fixed subset of {sz['test']:,} of the {sz['test_full']:,} test snippets, "
             f"Lee Spearman on {sz['lee_pairs']} test "
             f"pairs, cosine to the dense embedding on those RT test snippets. Mean ± sd over seeds.", "",
             "| variant | recovery | params | MACs (128 tok) | RT acc. before recovery | RT acc. after | vs dense (pt) "
             "| Lee Spearman | cos to dense | recovery CPU s |", "|---|---|---|---|---|---|---|---|---|---|"]
    dense = [s["dense"] for s in seeds]
    lines.append(f"| dense | – | {dense[0]['params'] / 1e6:.2f} M | {dense[0]['macs'] / 1e9:.2f} G | – | "
                 f"{_ms([d['accuracy'] for d in dense], 100)}% | – | {_ms([d['spearman_lee'] for d in dense], 1, 4)} "
                 f"| 1 | – |")
    keys = list(dict.fromkeys((r["variant"], r.get("recovery")) for r in seeds[0]["rows"] if "allocation" in r))
    for variant, kind in keys:
        rows = [next(r for r in s["rows"] if (r["variant"], r.get("recovery")) == (variant, kind)) for s in seeds]
        drop = [r["after"]["accuracy"] - s["dense"]["accuracy"] for r, s in zip(rows, seeds, strict=True)]
        macs = [r["macs"] for r in rows]
        lines.append(f"| {variant} | {kind} | {_ms([r['params'] for r in rows], 1e-6)} M | "
                     f"{_ms(macs, 1e-9)} G | {_ms([r['before']['accuracy'] for r in rows], 100)}% | "
                     f"{_ms([r['after']['accuracy'] for r in rows], 100)}% | {_ms(drop, 100)} | "
                     f"{_ms([r['after']['spearman_lee'] for r in rows], 1, 4)} | "
                     f"{_ms([r['after']['cosine_rt'] for r in rows], 1, 4)} | "
                     f"{_ms([r['recover_cpu_s'] for r in rows], 1, 0)} |")
    shots = [r["variant"] for r in seeds[0]["rows"] if "solver" in r]
    if shots:
        lines += ["", "### One-shot 2:4 (every Linear of the 6 blocks; head and pooler dense) on the same dense models",
                  "", "Calibration: 128 training snippets of the subset, padding left out of the statistics. "
                  "`after distillation`: the same recovery as above with the 2:4 masks held; then saved with "
                  "`save_hf` and the files read back.", "",
                  "| variant | RT acc. one-shot | Lee Spearman | cos to dense | RT acc. after distillation | "
                  "Lee Spearman | cos to dense | saved: 2:4 weights | saved vs prunekit (sentence-transformers) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for variant in shots:
            rows = [next(r for r in s["rows"] if r["variant"] == variant) for s in seeds]
            b = lambda k, rows=rows: [r["before"][k] for r in rows]  # noqa: E731
            line = (f"| {variant} | {_ms(b('accuracy'), 100)}% | {_ms(b('spearman_lee'), 1, 4)} | "
                    f"{_ms(b('cosine_rt'), 1, 4)} | ")
            done = [(s["seed"], r) for s, r in zip(seeds, rows, strict=True) if "after" in r]
            if done:
                af = lambda k, done=done: [r["after"][k] for _, r in done]  # noqa: E731
                sv = [r["saved"] for _, r in done]
                nm = " / ".join(f"{x['nm_2_4']} of {x['linear_weights']}" for x in sv)
                which = "" if len(done) == len(rows) else f" (seed {', '.join(str(k) for k, _ in done)})"
                line += (f"{_ms(af('accuracy'), 100)}%{which} | {_ms(af('spearman_lee'), 1, 4)} | "
                         f"{_ms(af('cosine_rt'), 1, 4)} | {nm} | "
                         f"max abs diff {max(x['st_max_diff'] for x in sv):.1e} |")
            else:
                line += "– | – | – | – | – |"
            lines.append(line)
    return lines


def _latency_lines(lat: dict) -> list[str]:
    rows = lat["rows"]
    lines = [f"## Latency at 1 thread and at every thread (batch 1 and 32 × {lat['sequence']} tokens)", "",
             "The pretrained encoder pruned (L2, no training: recovery does not change the shapes); dense and pruned "
             "timed run by run in one process. CPU time is the process's (at 2 threads it adds both threads' "
             "time, so it shows the work, not the wait); wall time at 2 threads is what a user waits, on a machine "
             "that other processes were also using (load in the last column).", "",
             "| variant | MACs | threads | b1 wall ms | b1 CPU ms | b32 wall ms | b32 CPU ms | "
             "speed-up b1 wall / CPU | speed-up b32 wall / CPU | load (1 min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    get = {(r["variant"], r["threads"], r["batch"]): r for r in rows}
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for threads in sorted({r["threads"] for r in rows}):
        for v in variants:
            b1, b32 = get[(v, threads, 1)], get[(v, threads, 32)]
            d1, d32 = get[(variants[0], threads, 1)], get[(variants[0], threads, 32)]
            sp = lambda d, x: f"{d['wall_ms'] / x['wall_ms']:.2f}× / {d['cpu_ms'] / x['cpu_ms']:.2f}×"  # noqa: E731
            load = b32.get("load")
            lines.append(f"| {v} | {lat['macs'][v] / 1e9:.2f} G | {threads} | {b1['wall_ms']:.1f} | "
                         f"{b1['cpu_ms']:.1f} | "
                         f"{b32['wall_ms']:.0f} | {b32['cpu_ms']:.0f} | {sp(d1, b1)} | {sp(d32, b32)} | "
                         f"{'–' if load is None else f'{load:.1f}'} |")
    return lines


def sections(result: dict) -> list[str]:
    """The Markdown of the recovery and latency parts (also rendered into transformers.md)."""
    from _common import provenance_line

    lines: list[str] = []
    if result.get("recovery"):
        lines += [*_recovery_lines(result["recovery"]), "", "Measured: " +
                  provenance_line(result["recovery"]["provenance"]), ""]
    if result.get("latency"):
        lines += [*_latency_lines(result["latency"]), "", "Measured: " +
                  provenance_line(result["latency"]["provenance"]), ""]
    return lines


def render(result: dict) -> str:
    head = ["# MiniLM: recovery after pruning, one-shot 2:4, latency at 1 and all threads", "",
            "Produced by `bench/text_recovery.py` (rendered into `transformers.md` too).", ""]
    return "\n".join(head + sections(result)) + render_footer(result)


if __name__ == "__main__":
    sys.exit(main())
