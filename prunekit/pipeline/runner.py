"""Runs a recipe: every stage of :data:`~prunekit.pipeline.stages.ORDER` in turn, each stage's output the next
one's input. The output directory is written whole or not at all, by one run at a time: the run takes the
output's lock before any work (:class:`~prunekit.io.outdir.OutputDir`), the save, export and report stages write
into a staging directory beside it, and that replaces ``out`` only when all of them succeeded.

A stop (Ctrl-C, SIGTERM, or any error) removes the staging directory — unless it holds a checkpoint: a stopped
run then keeps it and :class:`~prunekit.errors.RunStopped` says where, for ``resume``.
"""

from __future__ import annotations

import time
from pathlib import Path

from prunekit.errors import RunStopped
from prunekit.io.outdir import OutputDir, check_output_dir
from prunekit.measure import threads
from prunekit.pipeline.preflight import preflight
from prunekit.pipeline.report import REPORTERS
from prunekit.pipeline.schema import Recipe
from prunekit.pipeline.stages import ORDER, STAGES, Run

__all__ = ["run_recipe"]


def run_recipe(recipe: Recipe, out: str | Path, force: bool = False, progress: bool = True,
               quiet: bool = False, resume: bool = False) -> dict:
    """Carries out ``recipe`` and writes its results to ``out``; returns the report dict.

    ``out`` holds ``report.json``, ``report.md`` (with plots for mask methods), the pruned model
    (``pruned.json`` + ``model.safetensors``, loaded back with :func:`prunekit.load_pruned`), ``recipe.yaml``
    as run, and the method's own files (``sensitivity.json``, ``latency_table.json``).

    Raises:
        OutputExistsError: ``out`` holds results (and not ``force``), or another run is writing it.
        RunStopped: Ctrl-C or SIGTERM (``where`` says what was kept).
    """
    check_output_dir(out, force)  # fail before any training
    with OutputDir(out, force, resume) as target:
        # The CLI's --threads (or the default: OMP_NUM_THREADS, 1 per process under torchrun/xdist, the free CPUs).
        run = Run(recipe, Path(out), progress, quiet, stage_dir=target.stage, threads=threads.ensure_configured())
        try:
            value = None
            for name in ORDER:
                value = _timed(run, name, value)
                if name == "model":
                    preflight(recipe, value)  # what can fail late is checked before training
            target.commit()
        except KeyboardInterrupt as e:
            stop = e if isinstance(e, RunStopped) else RunStopped("SIGINT")
            stop.where = target.abandon(keep_checkpoint=True)
            if stop is e:
                raise
            raise stop from None
        except BaseException:
            target.abandon()
            raise
    report = value.report
    run.log(f"{REPORTERS.get(recipe.prune.spec.kind).summary(report)}; report in {out}")
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
