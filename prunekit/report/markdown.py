"""report.md: the human-readable side of report.json."""

from __future__ import annotations

__all__ = ["render_markdown", "render_masks_extra", "render_structured_markdown"]


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _row(label: str, dense, pruned, fmt=str) -> str:
    return f"| {label} | {fmt(dense)} | {fmt(pruned)} |"


def render_markdown(report: dict, plots: dict[str, str]) -> str:
    """Renders the report's tables; ``plots`` maps a caption to a PNG file name beside report.md."""
    d, p = report["dense"], report["pruned"]
    lines = [
        f"# prunekit report: {report['name']}",
        "",
        f"Model `{report['model']}` on `{report['dataset']}`, seed {report['seed']}; "
        f"method `{report['prune']['method']}`, importance `{report['prune'].get('importance', 'l2')}`, "
        f"allocation `{report['prune'].get('allocation', 'uniform')}`.",
        "",
        f"**Sparsity {report['sparsity']:.1%}** of the prunable weights; "
        f"**compression {report['compression']:.1f}×** (all parameters / non-zero parameters); "
        f"test accuracy {d['accuracy']:.2%} → {p['accuracy']:.2%} "
        f"({100 * (p['accuracy'] - d['accuracy']):+.2f} pt).",
        "",
        "| | dense | pruned |",
        "|---|---|---|",
        _row("test accuracy", d["accuracy"], p["accuracy"], lambda v: f"{v:.2%}"),
        _row("test loss", d["loss"], p["loss"], lambda v: f"{v:.4f}"),
        _row("parameters", d["params"], p["params"], lambda v: f"{v:,}"),
        _row("non-zero parameters", d["nonzero_params"], p["nonzero_params"], lambda v: f"{v:,}"),
        _row("MACs / sample", d["macs"], p["macs"], lambda v: f"{v:,}"),
        _row("non-zero MACs / sample", d["nonzero_macs"], p["nonzero_macs"], lambda v: f"{v:,}"),
        _row("size (safetensors)", d["size_bytes"], p["size_bytes"], _fmt_bytes),
        _row("size (sparse, zipped)", d["size_compressed_bytes"], p["size_compressed_bytes"], _fmt_bytes),
    ]
    for b in d["latency_ms"]:
        lines.append(_row(f"CPU latency, batch {b} (median)", d["latency_ms"][b], p["latency_ms"][b],
                          lambda v: f"{v:.3f} ms"))
    threads = next(iter(d["latency"].values()))["threads"]
    lines += [
        "",
        f"Latency: median of ≥ {report['measure']['latency_repeats']} timed runs after warm-up, "
        f"{threads} thread(s), device `{next(iter(d['latency'].values()))['device']}`. Unstructured "
        "sparsity does not make dense kernels faster: expect equal latency.",
        "",
        "## Schedule",
        "",
        "| step | sparsity | val acc. after pruning | val acc. after fine-tune | test acc. |",
        "|---|---|---|---|---|",
    ]
    for r in report["steps"]:
        before = "–" if r.get("val_accuracy_pruned") is None else f"{r['val_accuracy_pruned']:.2%}"
        lines.append(f"| {r['step']} | {r['sparsity']:.2%} | {before} | {r['val_accuracy']:.2%} | "
                     f"{r['test_accuracy']:.2%} |")
    lines += ["", "## Per-layer sparsity", "", "| weight | shape | sparsity |", "|---|---|---|"]
    for name, s in p["layer_sparsity"].items():
        lines.append(f"| `{name}` | {report['layer_shapes'].get(name, '')} | {s:.2%} |")
    for caption, file in plots.items():
        lines += ["", f"![{caption}]({file})"]
    lines += ["", f"Timings: {report['timings_s']}", ""]
    return "\n".join(lines)


def render_masks_extra(report: dict) -> str:
    """The lottery-vs-control table and the dead-channel removal, when the report has them."""
    lines = []
    if "control" in report:
        c = report["control"]
        lines += ["", "## Lottery ticket vs control", "",
                  "| | test accuracy |", "|---|---|",
                  f"| dense | {report['dense']['accuracy']:.2%} |",
                  f"| ticket (rewound to {report['lottery']['rewind']}, retrained) | "
                  f"{report['pruned']['accuracy']:.2%} |",
                  f"| control (same mask, random re-initialisation, same training) | {c['accuracy']:.2%} |", ""]
        if c.get("warning"):
            lines += [f"**Warning:** {c['warning']}.", ""]
    if "structural" in report:
        s = report["structural"]
        lines += ["", "## With dead channels removed", "",
                  f"MACs / sample {s['macs']:,} (dense {report['dense']['macs']:,}), parameters {s['params']:,}; "
                  f"units removed per group: {s['removed']}.", ""]
    return "\n".join(lines)


def _cost_note(p: dict) -> str:
    if p.get("allocation_cost", "budget") != "latency":
        return ""
    mu = p.get("latency_weight")
    how = "measured latency saved" if mu is None else f"loss rise − {mu:g}·latency saved (fraction) per MAC saved"
    passes = p.get("latency_passes", 1)
    again = f", the table re-measured around the allocation {passes - 1}×" if passes > 1 else ""
    return f" (steps ranked by {how} at batch {p['latency_table_batch']}{again})"


def _export_note(inference: dict) -> str:
    names = (("BatchNorm folded", "fold_bn"), ("channels_last", "channels_last"))
    parts = [p for p, key in names if inference.get(key)]
    return ", ".join(parts) or "as trained (eager, no export)"


def render_structured_markdown(r: dict) -> str:
    """report.md of a structured run: both models' figures, the speed-up per batch and the per-group ratios."""
    d, p, pr = r["dense"], r["pruned"], r["prune"]
    lines = [f"# {r['name']}: {r['model']} on {r['dataset']} (seed {r['seed']})", "",
             f"Importance `{pr['importance']}`, allocation `{pr['allocation']}`, budget `{pr['budget']}`"
             f"{_cost_note(pr)}, recovery `{r.get('recovery', 'finetune')}`. Latency of both models as exported for "
             f"inference: {_export_note(r['measure'].get('inference', {}))}; the two timed alternately, run by run, "
             "after fine-tuning (medians).", "",
             "| | dense | pruned |", "|---|---|---|",
             f"| test accuracy | {d['accuracy']:.2%} | {p['accuracy']:.2%} |",
             f"| parameters | {d['params']:,} | {p['params']:,} |", f"| MACs | {d['macs']:,} | {p['macs']:,} |",
             f"| size (bytes) | {d['size_bytes']:,} | {p['size_bytes']:,} |"]
    for b in d["latency_ms"]:
        lines.append(f"| latency, batch {b} (ms) | {d['latency_ms'][b]:.2f} | {p['latency_ms'][b]:.2f} "
                     f"({r['speedup'][b]:.2f}×) |")
    after = r.get("accuracy_after_pruning")
    before = f" ({after:.2%} before fine-tuning)" if after is not None else ""
    lines += ["", f"{r['macs_reduction']:.2f}× fewer MACs, {r['compression']:.2f}× fewer parameters, accuracy "
              f"{-r['accuracy_drop_pt']:+.2f} pt{before}.", "",
              "Per-group ratios removed: " + ", ".join(f"{k} {v:.0%}" for k, v in
                                                      r["allocation"]["allocation"]["ratios"].items()), ""]
    return "\n".join(lines)
