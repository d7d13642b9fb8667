"""PNG plots for report.md (matplotlib, imported lazily: without it the report has no plots)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_accuracy_cost", "plot_trajectory", "plot_layer_sparsity", "have_matplotlib"]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_trajectory(steps: list[dict], dense_accuracy: float, path: Path) -> None:
    """Accuracy against sparsity along the pruning schedule, with the dense accuracy for reference."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    s = [0.0] + [r["sparsity"] for r in steps]
    ax.plot(s, [dense_accuracy] + [r["test_accuracy"] for r in steps], "o-", label="test")
    ax.plot(s[1:], [r["val_accuracy"] for r in steps], "s--", label="validation")
    ax.axhline(dense_accuracy, color="grey", lw=0.8, ls=":", label="dense (test)")
    ax.set_xlabel("sparsity of prunable weights")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy along the pruning schedule")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_layer_sparsity(layer_sparsity: dict[str, float], path: Path) -> None:
    """A horizontal bar per weight tensor: its sparsity after pruning."""
    plt = _pyplot()
    names = list(layer_sparsity)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.2))
    ax.barh(names, [layer_sparsity[n] for n in names], color="tab:orange")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("sparsity")
    ax.set_title("Per-layer sparsity")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy_cost(points: list[dict], chosen: dict, static: dict, path: Path) -> None:
    """Accuracy against mean MACs per input for a sweep of a dynamic model's knob (e.g. a shared exit threshold),
    with the chosen setting and the static network marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["mean_macs"] / 1e6 for p in points], [p["accuracy"] for p in points], "o-", ms=3,
            label="sweep (test)")
    ax.plot([chosen["macs"] / 1e6], [chosen["accuracy"]], "r*", ms=12, label="chosen on validation")
    ax.plot([static["macs"] / 1e6], [static["accuracy"]], "ks", label="static network")
    ax.set_xlabel("mean MMACs per input (path taken)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs cost")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
