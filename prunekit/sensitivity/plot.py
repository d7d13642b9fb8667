"""The sensitivity plot: one accuracy curve per group (matplotlib, imported lazily)."""

from __future__ import annotations

from pathlib import Path

from prunekit.report.plots import _pyplot
from prunekit.sensitivity.analysis import Sensitivity

__all__ = ["plot_sensitivity"]


def plot_sensitivity(sens: Sensitivity, path: str | Path) -> None:
    """Accuracy (left) and loss (right) against the ratio pruned, one line per group or layer."""
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    for c in sens.curves.values():
        ax.plot([0.0, *c.ratios], [sens.dense_accuracy, *c.accuracy], marker=".", label=c.name)
        bx.plot([0.0, *c.ratios], [sens.dense_loss, *c.loss], marker=".", label=c.name)
    ax.axhline(sens.dense_accuracy - 0.01, color="grey", lw=0.8, ls=":", label="dense − 1 pt")
    ax.set_xlabel("fraction of the group's units removed (alone)")
    ax.set_ylabel("validation accuracy")
    bx.set_xlabel("fraction removed")
    bx.set_ylabel("validation loss")
    bx.set_yscale("log")
    ax.set_title(f"Sensitivity ({sens.criterion})")
    for a in (ax, bx):
        a.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
