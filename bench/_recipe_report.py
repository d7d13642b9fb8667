"""Renders the report of a ``prunekit run`` kept under bench/results/ (``report.json`` → ``report.md``).

The Markdown is the one the CLI writes (the pipeline's structured renderer; version-1 reports, written before
the pipeline replaced ``prunekit.recipe``, by the renderer of that time, kept here), plus the notes and the
provenance that bench/results pages carry.
"""

from __future__ import annotations

from _common import render_footer  # bench/ is sys.path[0] when run as a script

from prunekit.export import InferenceConfig
from prunekit.report import render_structured_markdown


def render(report: dict) -> str:
    """report.md from its report.json."""
    body = _markdown_v1(report) if "structured" in report else render_structured_markdown(report)
    return body + render_footer(report)


def _cost_note_v1(r: dict) -> str:
    s = r["structured"]
    if s.get("allocation_cost", "budget") != "latency":
        return ""
    mu = s.get("allocation_latency_weight")
    how = "measured latency saved" if mu is None else f"loss rise − {mu:g}·latency saved (fraction) per MAC saved"
    passes = s.get("latency_passes", 1)
    again = f", the table re-measured around the allocation {passes - 1}×" if passes > 1 else ""
    return f" (steps ranked by {how} at batch {s['latency_table_batch']}{again})"


def _markdown_v1(r: dict) -> str:
    d, p = r["dense"], r["pruned"]
    lines = [f"# {r['name']}: {r['model']} on {r['dataset']} (seed {r['seed']})", "",
             f"Criterion `{r['structured']['criterion']}`, strategy `{r['structured']['strategy']}`, target "
             f"`{r['structured']['target']}`{_cost_note_v1(r)}, recovery `{r.get('recovery', 'finetune')}`. Latency "
             f"of both models as exported for inference: {InferenceConfig(**r.get('inference', {})).describe()}; the "
             "two timed alternately, run by run, after fine-tuning (medians).", "",
             "| | dense | pruned |", "|---|---|---|",
             f"| test accuracy | {d['accuracy']:.2%} | {p['accuracy']:.2%} |",
             f"| parameters | {d['params']:,} | {p['params']:,} |", f"| MACs | {d['macs']:,} | {p['macs']:,} |",
             f"| size (bytes) | {d['size_bytes']:,} | {p['size_bytes']:,} |"]
    for b in d["latency_ms"]:
        lines.append(f"| latency, batch {b} (ms) | {d['latency_ms'][b]:.2f} | {p['latency_ms'][b]:.2f} "
                     f"({r['speedup'][b]:.2f}×) |")
    lines += ["", f"{r['macs_reduction']:.2f}× fewer MACs, {r['compression']:.2f}× fewer parameters, accuracy "
              f"{-r['accuracy_drop_pt']:+.2f} pt ({r['accuracy_after_pruning']:.2%} before fine-tuning).", "",
              "Per-group ratios removed: " + ", ".join(f"{k} {v:.0%}" for k, v in
                                                      r["allocation"]["allocation"]["ratios"].items()), ""]
    return "\n".join(lines)
