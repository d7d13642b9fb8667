"""Runs a recipe: every stage of :data:`~prunekit.pipeline.stages.ORDER` in turn, each stage's output the next
one's input.

The output directory is written whole or not at all, by one run at a time: the run takes the output's lock
before any work (:class:`~prunekit.io.outdir.OutputDir`), every stage writes into a staging directory beside
it, and that replaces ``out`` only when all of them succeeded. The staging directory also holds the run's
checkpoints (:class:`~prunekit.training.journal.Journal`); a stop (Ctrl-C, SIGTERM, an error) keeps it when it
holds one, and ``resume`` continues there to the same results.

Under torchrun (``WORLD_SIZE`` > 1) every rank runs the stages up to ``dynamic`` (the training ones); rank 0
alone holds the lock, checkpoints, measures and writes; every rank applies rank 0's pruning decisions
(:mod:`prunekit.training.distributed`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from prunekit.errors import PrunekitError, RunStopped
from prunekit.io.outdir import CHECKPOINT_DIR, OutputDir
from prunekit.measure import threads
from prunekit.pipeline.preflight import preflight
from prunekit.pipeline.report import REPORTERS, report_kind
from prunekit.pipeline.schema import Recipe
from prunekit.pipeline.stages import ORDER, STAGES, Run
from prunekit.training import distributed
from prunekit.training.journal import Journal, identity_of, journaling

__all__ = ["run_recipe"]

#: The last stage every rank runs (it trains exit heads or gates; the later ones measure and write: rank 0 only).
LAST_SHARED_STAGE = "dynamic"


def run_recipe(recipe: Recipe, out: str | Path, force: bool = False, progress: bool = True,
               quiet: bool = False, resume: bool = False, checkpoint: str = "epoch") -> dict | None:
    """Carries out ``recipe`` and writes its results to ``out``; returns the report dict (None on ranks > 0).

    ``out`` holds ``report.json``, ``report.md`` (with plots for mask methods), the pruned model
    (``pruned.json`` + ``model.safetensors``, loaded back with :func:`prunekit.load_pruned`), ``recipe.yaml``
    as run, and the method's own files (``sensitivity.json``, ``latency_table.json``).

    Args:
        resume: continue the stopped run into ``out`` from its checkpoint (same recipe and process count).
        checkpoint: ``epoch`` (every epoch and training phase), ``phase`` or ``off``.

    Raises:
        OutputExistsError: ``out`` holds results (and not ``force``), or another run is writing it.
        RunStopped: Ctrl-C or SIGTERM (``where`` says what was kept).
    """
    distributed.init_from_env()
    writer = distributed.is_writer()
    target = OutputDir(out, force, resume) if writer else None
    stage = _open_everywhere(target, out, force)
    try:
        # The CLI's --threads (or the default: OMP_NUM_THREADS, 1 per process under torchrun/xdist, the free CPUs).
        choice = threads.ensure_configured()
        identity = identity_of(recipe.to_dict(), processes=distributed.world_size())
        log = Journal(stage / CHECKPOINT_DIR, checkpoint, identity, resume, writer)
        choice = _same_threads(log, choice, resume, quiet)
        run = Run(recipe, Path(out), progress and writer, quiet or not writer, stage_dir=stage, threads=choice)
        run.distributed = distributed.describe(recipe.train.batch_size)
        if resume:
            run.log(f"resuming {recipe.name} from its checkpoint at {log.resuming_at}")
        value = _stages(run, log, recipe, writer)
        if target is not None:
            target.commit()
    except KeyboardInterrupt as e:
        stop = e if isinstance(e, RunStopped) else RunStopped("SIGINT")
        stop.where = target.abandon(_keep(target, stage)) if target is not None else "rank > 0 writes nothing"
        if stop is e:
            raise
        raise stop from None
    except BaseException as e:
        if target is not None:
            kept = target.abandon(_keep(target, stage))
            if "checkpoint" in kept:
                e.prunekit_where = kept
        raise
    finally:
        if target is not None:
            target.close()
    if not writer:
        return None
    report = value.report
    run.log(f"{REPORTERS.get(report_kind(recipe)).summary(report)}; report in {out}")
    return report


def _open_everywhere(target: OutputDir | None, out, force: bool) -> Path:
    """Rank 0 checks the output, takes its lock and makes (or finds) the staging directory; every rank learns
    the outcome, so a refusal stops them all at once."""
    stage = error = None
    if target is not None:
        try:
            stage = str(target.open().stage)
        except PrunekitError as e:
            error = e
    shared_stage, message = distributed.broadcast_object((stage, None if error is None else str(error)))
    if error is not None:
        raise error
    if message is not None:
        raise PrunekitError(f"rank 0: {message}")
    return Path(shared_stage)


def _same_threads(log: Journal, choice, resume: bool, quiet: bool):
    """A resumed run computes with the thread count of the run it continues (convolution gradients differ by
    thread count); a new run records its own."""
    if not resume:
        log.state["threads"] = choice.threads
        return choice
    recorded = log.state.get("threads")
    if recorded and recorded != choice.threads:
        if not quiet:
            print(f"prunekit: note: resuming with {recorded} threads, as the run did (not {choice.threads})")
        return threads.configure(recorded)
    return choice


def _stages(run: Run, log: Journal, recipe: Recipe, writer: bool):
    value = None
    with journaling(log), distributed.decisions_from_rank0():
        for name in ORDER:
            log.enter_stage(name)
            value = _timed(run, name, value)
            if name == "model":
                preflight(recipe, value)  # what can fail late is checked before training
            if name == LAST_SHARED_STAGE and not writer:
                return None
            if name == LAST_SHARED_STAGE:
                run.checkpoint = {"every": log.every, "seconds": round(log.seconds, 3),
                                  "resumed": log.resumed}
    return value


def _keep(target: OutputDir, stage: Path) -> bool:
    """Whether a stopped run keeps its staging directory: it holds a checkpoint worth resuming (a finished phase
    or epoch), or it is the one a resumption found (never deleted by a failed --resume)."""
    if target.resumed:
        return True
    index = stage / CHECKPOINT_DIR / "state.json"
    if not index.is_file():
        return False
    state = json.loads(index.read_text())
    return bool(state.get("done") or state.get("current"))


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
