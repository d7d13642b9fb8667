"""PNG plots for report.md (matplotlib, imported lazily: without it the report has no plots)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_trajectory", "plot_layer_sparsity", "have_matplotlib"]


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
