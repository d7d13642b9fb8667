"""The stages of a run, each a function ``stage(run, input) -> output`` with typed (dataclass) input and output:

``data`` → :class:`Loaded` → ``model`` → :class:`Built` → ``train`` → :class:`Trained` → ``prune`` →
:class:`Pruned` → ``recover`` → :class:`Recovered` → ``dynamic`` → :class:`Recovered` → ``measure`` →
:class:`Measured` → ``save`` → :class:`Saved` → ``export`` → :class:`Exported` → ``report`` → :class:`Reported`.

Stages are registered by name in :data:`STAGES`; :data:`ORDER` is the pipeline. A new stage is one function and
one entry (its input type must be the output type of the stage before it; :func:`check_chain` checks that).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from prunekit.data import DataSplits, TextSplits, load_dataset
from prunekit.dynamic import build_dynamic, measure_dynamic, save_dynamic
from prunekit.export import prepare_inference
from prunekit.io.checkpoint import atomic_write_text, load_weights_into
from prunekit.measure import Stopwatch, ThreadChoice
from prunekit.measure.summary import measure_model, time_side_by_side
from prunekit.models import build_model, source_of
from prunekit.pipeline.deploy import deploy_markdown  # also registers the onnx export format
from prunekit.pipeline.methods import PruneContext, PruneOutcome, PrunePlan
from prunekit.pipeline.report import REPORTERS, report_kind
from prunekit.pipeline.schema import EXPORTERS, Recipe
from prunekit.pipeline.text import text_build, text_measure, text_recover, text_save, text_train
from prunekit.pruners.lottery import WeightSnapshot
from prunekit.recovery import recover
from prunekit.registry import Registry
from prunekit.structured.serialize import save_pruned
from prunekit.training import default_device, train

__all__ = ["Run", "Stage", "STAGES", "ORDER", "Loaded", "Built", "Trained", "Pruned", "Recovered", "Measured",
           "Saved", "Exported", "Reported", "check_chain"]


@dataclass
class Run:
    """What every stage may read: the recipe, where results go and how to talk."""

    recipe: Recipe
    out: Path
    progress: bool = True
    quiet: bool = False
    stage_dir: Path | None = None  # the staging directory the save/export/report stages write into
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, filled by the runner
    threads: ThreadChoice | None = None  # the intra-op thread count the run uses (recorded in the report)
    distributed: dict | None = None  # processes, backend, batch semantics under torchrun (recorded in the report)
    checkpoint: dict | None = None  # the checkpoint interval, the seconds spent writing them, resumed or not
    clock: Stopwatch = field(default_factory=Stopwatch)  # wall and CPU seconds since the run started

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)


@dataclass
class Loaded:
    data: DataSplits | TextSplits


@dataclass
class Built:
    data: DataSplits | TextSplits
    model: nn.Module
    plan: PrunePlan


@dataclass
class Trained:
    built: Built
    snapshot: WeightSnapshot | None
    reference: nn.Module  # the trained dense model, eval mode: timed beside the pruned one, the distillation teacher
    dense: dict


@dataclass
class Pruned:
    trained: Trained
    outcome: PruneOutcome


@dataclass
class Recovered:
    pruned: Pruned
    history: Any = None
    dynamic: nn.Module | None = None  # the input-dependent model built on the pruned one (recipe.dynamic)
    dynamic_report: dict = field(default_factory=dict)


@dataclass
class Measured:
    recovered: Recovered
    pruned: dict
    extra: dict = field(default_factory=dict)

    @property
    def trained(self) -> Trained:
        return self.recovered.pruned.trained

    @property
    def outcome(self) -> PruneOutcome:
        return self.recovered.pruned.outcome


@dataclass
class Saved:
    measured: Measured
    directory: Path
    files: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)  # the method's checks of the written files (PruneMethod.verify)


@dataclass
class Exported:
    saved: Saved
    files: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)  # what the exporters add to report.json (e.g. deployed)


@dataclass
class Reported:
    exported: Exported
    report: dict


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[Run, Any], Any]
    input: type | None
    output: type


#: The stages by name.
STAGES: Registry = Registry("stage")


def stage(name: str, input_type: type | None, output_type: type):
    def add(fn):
        STAGES.register(name)(Stage(name, fn, input_type, output_type))
        return fn

    return add


@stage("data", None, Loaded)
def load_data(run: Run, _: None) -> Loaded:
    """The dataset; an image folder for a zoo model gets that model's preprocessing (``data.options`` override it)."""
    d, m = run.recipe.data, run.recipe.model
    options = run.recipe.data_options()
    if options != d.options:
        run.log(f"preprocessing for {m.name}: resize {options['resize']}, crop {options['image_size']}, "
                f"mean {options['mean']}, std {options['std']}")
    return Loaded(load_dataset(d.name, **options))


@stage("model", Loaded, Built)
def build(run: Run, inp: Loaded) -> Built:
    """Builds the model and lets the prune method set up on it (bad layers fail here, before training)."""
    r = run.recipe
    torch.manual_seed(r.seed)
    spec = r.prune.spec
    if isinstance(inp.data, TextSplits):  # hf: text models (tokenizer, tokenised splits): pipeline.text
        model, state = text_build(run, inp.data)
        plan = spec.prepare(r, model, inp.data) if spec.prepare is not None else PrunePlan()
        plan.state["text"] = state
        return Built(inp.data, model, plan)
    model = _build_model(r, inp.data).to(default_device())
    plan = spec.prepare(r, model, inp.data) if spec.prepare is not None else PrunePlan()
    return Built(inp.data, model, plan)


def _build_model(r: Recipe, data: DataSplits) -> nn.Module:
    m = r.model
    model = build_model(m.name, data.input_shape, data.num_classes, m.kwargs)
    if m.checkpoint:
        load_weights_into(model, m.checkpoint, exclude=m.checkpoint_exclude)
    return model


@stage("train", Built, Trained)
def train_dense(run: Run, inp: Built) -> Trained:
    """Dense training (with the method's penalty and step hook); stores θ₀ for rewinding methods."""
    r = run.recipe
    if isinstance(inp.data, TextSplits):
        dense = text_train(run, inp.model, inp.data, inp.plan.state["text"])
        run.log(f"dense: {_text_line(dense)}")
        return Trained(inp, None, copy.deepcopy(inp.model).eval(), dense)
    snapshot = WeightSnapshot.capture(inp.model) if r.train.epochs else None
    if r.train.epochs:
        run.log(f"training {r.model.name} on {r.data.name} for {r.train.epochs} epochs")
        train(inp.model, inp.data, r.train, seed=r.seed, progress=run.progress, desc="dense",
              on_step=inp.plan.on_train_step, loss_fn=inp.plan.train_loss)
    dense = measure_model(inp.model, inp.data.x_test, inp.data.y_test, latency_batches=[])
    reference = copy.deepcopy(inp.model).eval()  # no masks yet: every method installs them after this point
    run.log(f"dense: test accuracy {dense['accuracy']:.2%}, {dense['params']:,} parameters, {dense['macs']:,} MACs")
    return Trained(inp, snapshot, reference, dense)


@stage("prune", Trained, Pruned)
def prune(run: Run, inp: Trained) -> Pruned:
    r = run.recipe
    run.log(f"pruning: {r.prune.method} ({_describe(r.prune.options)})")
    ctx = PruneContext(r, inp.built.model, inp.built.data, inp.built.plan, inp.reference, inp.snapshot, run.progress,
                       run.log)
    outcome = r.prune.spec.run(ctx)
    for s in outcome.steps:
        run.log(f"  step {s['step']}: sparsity {s['sparsity']:.2%}, val accuracy {s['val_accuracy']:.2%}")
    return Pruned(inp, outcome)


def _text_line(m: dict) -> str:
    parts = [f"test accuracy {m['accuracy']:.2%}"] if m.get("accuracy") is not None else []
    parts += [f"{k} Spearman {v:.4f}" for k, v in m.get("spearman", {}).items()]
    parts += [f"{m['params']:,} parameters, {m['macs']:,} MACs at {m['sequence']} tokens"]
    return ", ".join(parts)


def _describe(options: Any) -> str:
    keys = ("importance", "sparsity", "budget", "allocation", "granularity", "steps")
    return ", ".join(f"{k} {getattr(options, k)}" for k in keys if getattr(options, k, None) not in (None, "element"))


@stage("recover", Pruned, Recovered)
def recover_stage(run: Run, inp: Pruned) -> Recovered:
    """Fine-tunes or distils (teacher: the dense model) — unless the method already recovered as it pruned."""
    if inp.outcome.recovered:
        return Recovered(inp)
    r, t = run.recipe, inp.trained
    rec = r.recover
    if isinstance(t.built.data, TextSplits):
        hist = text_recover(run, t.built.model, t.reference, t.built.data, t.built.plan.state["text"])
        return Recovered(inp, hist)
    teacher = t.reference if rec.method == "distill" else None
    hist = recover(t.built.model, t.built.data, rec.train_config(), rec.recovery_config(), teacher, seed=r.seed,
                   progress=run.progress)
    return Recovered(inp, hist)


@stage("dynamic", Recovered, Recovered)
def dynamic(run: Run, inp: Recovered) -> Recovered:
    """Builds the recipe's dynamic model (exits, merged tokens, gates) on the recovered one; nothing without
    a ``dynamic`` section."""
    d = run.recipe.dynamic
    if d is None:
        return inp
    t = inp.pruned.trained
    if inp.pruned.outcome.masks is not None:
        inp.pruned.outcome.masks.make_permanent()
    run.log(f"dynamic: {d.method}")
    dyn, facts = build_dynamic(t.built.model, t.built.data, d, seed=run.recipe.seed, log=run.log)
    return Recovered(inp.pruned, inp.history, dyn, facts)


@stage("measure", Recovered, Measured)
def measure(run: Run, inp: Recovered) -> Measured:
    """Every figure of the pruned model; then both models' latency, timed alternately run by run (as exported)."""
    r, t, outcome = run.recipe, inp.pruned.trained, inp.pruned.outcome
    model, data = t.built.model, t.built.data
    if outcome.masks is not None:
        outcome.masks.make_permanent()
    if isinstance(data, TextSplits):
        pruned = text_measure(run, t.dense, model, t.reference, t.built.plan.state["text"])
        run.log(f"pruned: {_text_line(pruned)}")
        return Measured(inp, pruned, {})
    pruned = measure_model(model.eval(), data.x_test, data.y_test, latency_batches=[])
    if inp.dynamic is not None:
        return _measure_dynamic(run, inp, pruned)
    m, inf = r.measure, r.measure.inference
    exported = inf.fold_bn or inf.channels_last
    pair = [prepare_inference(x, inf) if exported else x.eval() for x in (t.reference, model)]
    example = data.x_test[:1].to(default_device())
    time_side_by_side(pair, [t.dense, pruned], example, m.latency_batches, m.latency_repeats, inf.memory_format)
    extra = {}
    if getattr(r.prune.options, "remove_channels", False):
        from prunekit.pruners.channels import structural_macs

        extra["structural"] = structural_macs(model, example)
    return Measured(inp, pruned, extra)


def _measure_dynamic(run: Run, inp: Recovered, static: dict) -> Measured:
    """``pruned`` describes the dynamic model: its accuracy, mean MACs per input on the path taken, and batch-1
    latency as the mean over every test input, timed alternately with the dense model (then batched)."""
    r, t = run.recipe, inp.pruned.trained
    dense_fig, dyn_fig, facts = measure_dynamic(t.reference, inp.dynamic, t.built.data, r.dynamic.method,
                                                r.measure.latency_batches, repeats=3)
    t.dense.update(latency_ms=dense_fig["latency_ms"], latency=dense_fig["latency"])
    pruned = {**static, **dyn_fig}
    facts = {**inp.dynamic_report, **facts, "static": {k: static[k] for k in ("accuracy", "macs", "params")}}
    run.log(f"dynamic: test accuracy {pruned['accuracy']:.2%}, mean {pruned['macs']:,} MACs per input, "
            f"{facts['speedup']['1']:.2f}× faster at batch 1 (mean over the test split)")
    return Measured(inp, pruned, {"dynamic": facts})


@stage("save", Measured, Saved)
def save(run: Run, inp: Measured) -> Saved:
    """The pruned model (``pruned.json`` + ``model.safetensors``), the recipe as run and the method's files."""
    r, d = run.recipe, run.stage_dir
    data = inp.trained.built.data
    verify = r.prune.spec.verify
    if isinstance(data, TextSplits):  # a plain Hugging Face directory (model/), the head, the recipe
        files = text_save(run, inp.trained.built.model, inp.trained.built.plan.state["text"], data, d)
        atomic_write_text(d / "recipe.yaml", yaml.safe_dump(r.to_dict(), sort_keys=False))
        return Saved(inp, d, [*files, "recipe.yaml"], verify(r, inp.outcome, d) if verify else {})
    kwargs = dict(r.model.kwargs)
    source = source_of(r.model.name)
    if source is not None and source.zoo:  # the head was sized from the data
        kwargs.setdefault("num_classes", data.num_classes)
    save_pruned(inp.trained.built.model, d, constructor=r.model.name, kwargs=kwargs,
                input_shape=data.input_shape, num_classes=data.num_classes, info={"recipe": r.name})
    atomic_write_text(d / "recipe.yaml", yaml.safe_dump(r.to_dict(), sort_keys=False))
    files = ["pruned.json", "model.safetensors", "recipe.yaml"]
    if inp.recovered.dynamic is not None:
        files += save_dynamic(inp.recovered.dynamic, d)
    for name, obj in inp.outcome.files.items():
        atomic_write_text(d / name, json.dumps(obj, indent=2))
        files.append(name)
    return Saved(inp, d, files, verify(r, inp.outcome, d) if verify else {})


@stage("export", Saved, Exported)
def export(run: Run, inp: Saved) -> Exported:
    """Writes each format of ``export.formats`` beside the saved model; an exporter is
    ``fn(run, saved) -> {"files": [...], "report": {...}}`` and its report keys go into report.json."""
    files, report = [], dict(inp.report)
    for name in run.recipe.export.formats:
        out = EXPORTERS.get(name)(run, inp)
        files += list(out.get("files", []))
        report.update(out.get("report", {}))
    return Exported(inp, files, report)


@stage("report", Exported, Reported)
def report(run: Run, inp: Exported) -> Reported:
    """report.json (figures) and report.md (tables, plots) for the method's kind."""
    measured = inp.saved.measured
    reporter = REPORTERS.get(report_kind(run.recipe))
    timings = {k: round(v, 2) for k, v in run.timings.items()}
    threads = run.threads.to_dict() if run.threads is not None else None
    extra = {**measured.extra, "timings_s": timings, "run_time_s": run.clock.read(), "threads": threads,
             "distributed": run.distributed, "checkpoint": run.checkpoint}
    rep = reporter.build(run.recipe, measured.trained.dense, measured.pruned, measured.outcome,
                         measured.recovered.history, extra,
                         measured.trained.built.model)
    rep.update(inp.report)
    atomic_write_text(run.stage_dir / "report.json", json.dumps(rep, indent=2))
    atomic_write_text(run.stage_dir / "report.md", reporter.markdown(rep, run.stage_dir) + deploy_markdown(rep))
    return Reported(inp, rep)


#: The pipeline, in order.
ORDER = ("data", "model", "train", "prune", "recover", "dynamic", "measure", "save", "export", "report")


def check_chain(order: tuple[str, ...] = ORDER) -> None:
    """Asserts that each stage takes what the stage before it returns (a programming error otherwise)."""
    prev: type | None = None
    for name in order:
        s = STAGES.get(name)
        assert s.input is prev, f"stage {name!r} takes {s.input}, but the stage before returns {prev}"
        prev = s.output


check_chain()
