"""Coverage of structured pruning over the model lists of issue 3 (bench/results/coverage.{json,md}).

Every model runs ``prunekit check MODEL --sparsity R --json --no-latency --small-images`` in its own
process (a crash or a hang costs one row, not the run), one thread, with a time limit.

    .venv/bin/python bench/coverage.py                     # all lists
    .venv/bin/python bench/coverage.py --lists timm hf     # some lists
    .venv/bin/python bench/coverage.py --lists outside --out coverage_outside   # models issue 3 does not name
    .venv/bin/python bench/coverage.py --lists tv_detection tv_segmentation tv_video tv_optical_flow \
        tv_quantization --out coverage_tv_families      # issue 16: every other torchvision builder
    .venv/bin/python bench/coverage.py --merge coverage coverage_tv_families --out coverage   # rows + provenance
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import RESULTS, provenance_line, render_footer, write_results  # bench/ is sys.path[0] when run as a script

TIMM = ["resnet50", "efficientnet_b0", "mobilenetv3_large_100", "convnext_tiny", "vit_small_patch16_224",
        "deit_small_patch16_224", "swin_tiny_patch4_window7_224", "regnety_016", "densenet121", "ghostnet_100",
        "levit_128", "mixer_b16_224", "poolformer_s12", "edgenext_small", "repvgg_a2", "dla34", "cspdarknet53",
        "tf_efficientnetv2_s", "coatnet_0_rw_224", "maxvit_tiny_tf_224"]
HF = ["bert", "gpt2", "llama", "vit", "clip", "t5"]
DETSEG = ["fasterrcnn_mobilenet_v3_large_fpn", "retinanet_resnet50_fpn", "deeplabv3_mobilenet_v3_large",
          "lraspp_mobilenet_v3_large"]
# Models issue 3 does not name, for its "models outside any list" target: the smallest variant of a timm
# family the issue does not list (CNNs, hybrids, ViT variants, MLPs, an LSTM mixer), and transformers model
# types beyond its six (encoders, decoders with GQA, encoder-decoders, vision, speech). Chosen before the run.
OUTSIDE_TIMM = ["efficientformer_l1", "mobilevit_xxs", "resnest14d", "rexnet_100", "hrnet_w18_small", "nf_resnet26",
                "xcit_nano_12_p16_224", "pvt_v2_b0", "cait_xxs24_224", "beit_base_patch16_224", "crossvit_tiny_240",
                "inception_v4", "res2net50_14w_8s", "gcvit_xxtiny", "fastvit_t8", "efficientvit_b0",
                "tiny_vit_5m_224", "eva02_tiny_patch14_224", "mobilenetv4_conv_small", "hgnetv2_b0", "selecsls42b",
                "dpn68", "tresnet_m", "sequencer2d_s", "twins_svt_small", "volo_d1_224", "visformer_tiny",
                "resmlp_12_224", "gmlp_ti16_224", "focalnet_tiny_srf", "davit_tiny", "inception_next_tiny",
                "repvit_m1", "lcnet_050", "vovnet39a", "efficientvit_m0", "mambaout_femto", "starnet_s1"]
OUTSIDE_HF = ["distilbert", "roberta", "albert", "electra", "deberta-v2", "mpnet", "xlm-roberta", "mobilebert",
              "mistral", "qwen2", "qwen3", "gemma", "phi", "gpt_neox", "opt", "bloom", "falcon", "bart", "convnext",
              "swin", "resnet", "mobilevit", "segformer", "deit", "whisper", "wav2vec2"]


TV_FAMILIES = ("detection", "segmentation", "video", "optical_flow", "quantization")


def model_lists() -> dict[str, list[str]]:
    import torchvision

    return {
        "torchvision": [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)],
        "timm": [f"timm:{n}" for n in TIMM],
        "hf": [f"hf:{n}" for n in HF],
        "detseg": [f"torchvision:{n}" for n in DETSEG],
        "outside": [f"timm:{n}" for n in OUTSIDE_TIMM] + [f"hf:{n}" for n in OUTSIDE_HF],
        # issue 16: every builder of torchvision's other modules, with the zoo's family inputs (image lists, 5-D
        # clips, image pairs)
        **{f"tv_{family}": [f"torchvision:{n}" for n in torchvision.models.list_models(
            module=getattr(torchvision.models, family))] for family in TV_FAMILIES},
    }


def run_inprocess(spec: str, ratio: float) -> dict:
    """The same check in this process (faster: no interpreter start and imports per model)."""
    import torch

    from prunekit.errors import PrunekitError
    from prunekit.pruners import StructuredConfig, check_model
    from prunekit.zoo import load

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        zm = load(spec, small=True)
        rec = check_model(spec, zm.model, zm.example_inputs, StructuredConfig(sparsity=ratio), latency=False).to_dict()
    except (PrunekitError, Exception) as e:  # one row per model, whatever happens
        rec = {"model": spec, "ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    rec["wall"] = round(time.perf_counter() - t0, 1)
    return rec


def run_one(spec: str, ratio: float, timeout: int) -> dict:
    cmd = [sys.executable, "-m", "prunekit.cli.main", "check", spec, "--sparsity", str(ratio), "--json",
           "--no-latency", "--small-images"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"model": spec, "ok": False, "error": f"timeout after {timeout}s", "wall": timeout}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if lines:
        rec = json.loads(lines[-1])
    else:
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        rec = {"model": spec, "ok": False, "error": err[:300]}
    rec["wall"] = round(time.perf_counter() - t0, 1)
    return rec


def _fmt(n: int | None) -> str:
    return "-" if not n else f"{n / 1e6:.2f}M"


def render(result: dict) -> str:
    """coverage*.md from its JSON."""
    results, ratio = result["results"], result["ratio"]
    lines = ["# Structured pruning coverage", "",
             f"`prunekit check MODEL --ratio {ratio} --small-images` on each model (L2 criterion, uniform ratio, "
             "exactly-prunable groups). ok = pruned, forward runs, output shapes kept, and the pruned output "
             "equals the unpruned model with the same structures zeroed (max relative difference <= 1e-5). "
             "All-zero parameters (zero-initialised biases, classifier heads, last-BN scales) are re-drawn with "
             "small noise first, so no comparison passes because a branch outputs zeros. "
             "seconds = graph capture + pruning. Produced by `bench/coverage.py`.", ""]
    for name, rows in results.items():
        ok = sum(1 for r in rows if r.get("ok"))
        lines += [f"## {name}: {ok} / {len(rows)} ok", "",
                  "| model | ok | equivalent | params | MACs | max rel diff | seconds | error |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            macs = (f"{r['macs_after'] / r['macs_before']:.2f}x" if r.get("macs_before") else "-")
            diff = "-" if r.get("max_rel_diff") is None else f"{r['max_rel_diff']:.1e}"
            err = (r.get("error") or "").replace("|", "/")[:160]
            if r.get("kept"):
                err = "; ".join([err] * bool(err) + [f"kept {m}: {why}" for m, why in r["kept"].items()])
            lines.append(f"| {r['model']} | {'yes' if r.get('ok') else 'NO'} | {r.get('equivalent', '-')} | "
                         f"{_fmt(r.get('params_before'))} -> {_fmt(r.get('params_after'))} | {macs} | {diff} | "
                         f"{r.get('seconds', 0):.2f} | {err} |")
        lines.append("")
    if result.get("sources"):
        lines += ["## Measured in", ""] + [f"- `{src['file']}` ({', '.join(src['lists'])}): "
                                           + (provenance_line(src["provenance"]) if src.get("provenance") else
                                              "no provenance recorded.") for src in result["sources"]] + [""]
    return "\n".join(lines) + render_footer(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lists", nargs="*", default=["torchvision", "timm", "hf", "detseg"])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--only", nargs="*", default=None, help="run just these model specs")
    ap.add_argument("--out", default="coverage")
    ap.add_argument("--inprocess", action="store_true", help="run every model in this process (no time limit)")
    ap.add_argument("--merge", nargs="*", default=None,
                    help="merge these earlier result files (names under bench/results) into --out; no runs")
    args = ap.parse_args()
    if args.merge:
        merged: dict[str, list[dict]] = {}
        sources: list[dict] = []
        notes: list[str] = []
        for name in args.merge:
            data = json.loads((RESULTS / f"{name}.json").read_text())
            notes += [n for n in data.get("notes", []) if n not in notes]
            # each measured file's own provenance travels with its rows (a merge measures nothing)
            sources += data.get("sources") or [{"file": f"{name}.json", "lists": list(data["results"]),
                                                "provenance": data.get("provenance")}]
            for k, rows in data["results"].items():
                for row in rows:  # a later file's row replaces an earlier one for the same model
                    old = merged.setdefault(k, [])
                    hit = [i for i, r in enumerate(old) if r["model"] == row["model"]]
                    if hit:
                        old[hit[0]] = row
                    else:
                        old.append(row)
        write_results(args.out, {"ratio": args.ratio, "results": merged, "sources": sources, "notes": notes}, render)
        return
    lists = model_lists()
    results: dict[str, list[dict]] = {}
    for name in args.lists:
        for spec in lists[name]:
            if args.only and spec not in args.only:
                continue
            rec = run_inprocess(spec, args.ratio) if args.inprocess else run_one(spec, args.ratio, args.timeout)
            results.setdefault(name, []).append(rec)
            print(f"{spec}: ok={rec.get('ok')} {rec.get('error') or ''} ({rec['wall']}s)", flush=True)
            write_results(args.out, {"ratio": args.ratio, "results": results}, render)  # after every model


if __name__ == "__main__":
    main()
