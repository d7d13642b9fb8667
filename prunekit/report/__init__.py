"""Reports: report.json, report.md and its plots."""

from prunekit.report.markdown import render_markdown, render_masks_extra, render_structured_markdown
from prunekit.report.plots import have_matplotlib, plot_accuracy_cost, plot_layer_sparsity, plot_trajectory

__all__ = ["have_matplotlib", "plot_accuracy_cost", "plot_layer_sparsity", "plot_trajectory", "render_markdown",
           "render_masks_extra", "render_structured_markdown"]
