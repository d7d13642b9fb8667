"""Runs a recipe: every stage of :data:`~prunekit.pipeline.stages.ORDER` in turn, each stage's output the next
one's input. The output directory is written whole or not at all: the save, export and report stages write into
a staging directory that replaces ``out`` only when all of them succeeded.
"""

from __future__ import annotations

import time
from pathlib import Path

from prunekit.io.outdir import check_output_dir, staged_output
from prunekit.measure import threads
from prunekit.pipeline.report import REPORTERS, report_kind
from prunekit.pipeline.schema import Recipe
from prunekit.pipeline.stages import ORDER, STAGES, Run

__all__ = ["run_recipe"]

#: Stages that write into the output directory (inside the staging directory).
_WRITING = ("save", "export", "report")


def run_recipe(recipe: Recipe, out: str | Path, force: bool = False, progress: bool = True,
               quiet: bool = False) -> dict:
    """Carries out ``recipe`` and writes its results to ``out``; returns the report dict.

    ``out`` holds ``report.json``, ``report.md`` (with plots for mask methods), the pruned model
    (``pruned.json`` + ``model.safetensors``, loaded back with :func:`prunekit.load_pruned`), ``recipe.yaml``
    as run, and the method's own files (``sensitivity.json``, ``latency_table.json``).
    """
    check_output_dir(out, force)  # fail before any training
    # The CLI's --threads (or the default: OMP_NUM_THREADS, 1 per process under torchrun/xdist, the free CPUs).
    run = Run(recipe, Path(out), progress, quiet, threads=threads.ensure_configured())
    value = None
    for name in ORDER:
        if name == _WRITING[0]:
            break
        value = _timed(run, name, value)
    with staged_output(out, force) as stage:
        run.stage_dir = stage
        for name in ORDER[ORDER.index(_WRITING[0]):]:
            value = _timed(run, name, value)
    report = value.report
    run.log(f"{REPORTERS.get(report_kind(recipe)).summary(report)}; report in {out}")
    return report


def _timed(run: Run, name: str, value):
    t = time.perf_counter()
    try:
        value = STAGES.get(name).fn(run, value)
    except Exception as e:
        if not hasattr(e, "prunekit_stage"):
            e.prunekit_stage = name  # the CLI names it in its one-line error
        raise
    run.timings[name] = time.perf_counter() - t
    return value
