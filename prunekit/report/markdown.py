"""report.md: the human-readable side of report.json."""

from __future__ import annotations

__all__ = ["render_markdown"]


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
        f"criterion `{report['prune']['criterion']}`, scope `{report['prune']['scope']}`, "
        f"schedule `{report['prune']['schedule']}`.",
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
