"""Deployment in recipes and for saved runs: the ``onnx`` export format and :func:`export_run`.

A recipe's ``export: {formats: [onnx], int8: static}`` exports the pruned model (and, as the baseline, the
dense model it came from) with :func:`prunekit.export.deploy_onnx`: verified ONNX files in ``onnx/`` of the run
directory, int8 quantised if asked, accuracy measured in ONNX Runtime on the test split and latency timed side by
side at the recipe's ``measure.latency_batches``. The report gains ``deployed`` and ``dense_deployed`` (accuracy,
``latency_ms`` by batch size, ``size_bytes``, ``backend``, ``path`` relative to the run directory).

The ``sparse_cpu`` format times the pruned model with torch sparse CSR/BSR kernels where they are measured faster
(:func:`prunekit.export.sparsify_for_cpu`) beside the same model with dense kernels; the report gains ``sparse_cpu``.

``prunekit export RUN_DIR`` does the same for a run already on disk (:func:`export_run`); a run directory holds
only the pruned model, so there is no dense baseline there.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from prunekit.errors import ConfigError
from prunekit.export import TextDeploy, deploy_onnx
from prunekit.export.onnx_deploy import TorchVariant
from prunekit.export.sparse import torch_threads
from prunekit.io.checkpoint import atomic_write_text
from prunekit.io.outdir import MARKER, staged_output
from prunekit.pipeline.schema import EXPORTERS, load_recipe

__all__ = ["deploy_markdown", "export_run"]

#: The subdirectory of a run directory the ONNX files go to.
ONNX_DIR = "onnx"
#: The compressed sparse int8 file of ``export.sparse_int8`` (in ``ONNX_DIR``).
SPARSE_INT8_FILE = "model.sparse-int8.xz"


@EXPORTERS.register("onnx")
def onnx_format(run: Any, saved: Any) -> dict:
    """The ``onnx`` export format of the ``export`` stage: ``fn(run, saved) -> {"files", "report"}``.

    With ``export.sparse_kernels`` the pruned model with torch sparse kernels (chosen per batch size by
    :func:`~prunekit.export.sparsify_for_cpu`) joins the timing loop; with ``export.sparse_int8`` the pruned weights
    are written as a compressed sparse int8 file, loaded back, and that model joins the table too."""
    e, m = run.recipe.export, run.recipe.measure
    t = saved.measured.trained
    model, dense = (copy.deepcopy(x).cpu().eval() for x in (t.built.model, t.reference))  # ONNX Runtime runs on CPU
    data, out_dir, batches = t.built.data, run.stage_dir / ONNX_DIR, m.latency_batches
    if "text" in t.built.plan.state:  # a Hugging Face encoder: tokenised text, timed at batch × sequence tokens
        state = t.built.plan.state["text"]
        data, batches = _text_data(run.recipe, t.built.data, state.test, state.example, model.head is not None)
    run.log(f"exporting to ONNX{f' with int8 {e.int8}' if e.int8 else ''}, verified in ONNX Runtime")
    variants, extra = {}, {}
    if e.sparse_kernels:
        variants["sparse_torch"], extra["sparse_kernels"] = _sparse_variant(run, model, data)
    if e.sparse_int8:
        variants["sparse_int8"], extra["sparse_int8"] = _sparse_int8_variant(model, out_dir)
    rep = deploy_onnx(model, dense, data, out_dir, int8=e.int8, batches=batches, threads=e.threads,
                      repeats=m.latency_repeats, relative_to=run.stage_dir, exporter=e.exporter, variants=variants)
    # prunekit wrote it, so `prunekit export RUN_DIR --force` may replace it later
    (out_dir / MARKER).write_text("prunekit output directory: prunekit --force may replace it\n")
    files = sorted({v["path"] for v in rep["table"].values() if v["path"]})
    report = {"deployed": rep["deployed"], "dense_deployed": rep["dense_deployed"],
              "deploy": {**{k: rep[k] for k in ("pruned_fp32", "table", "exports", "quantize", "threads")}, **extra}}
    return {"files": files, "report": report}


def _text_data(recipe: Any, splits: Any, test: Any, example: Any, head: bool) -> tuple[TextDeploy, list[int]]:
    """The tokenised test texts (labels for a classifier) and the latency example of a text run; its batch sizes
    as the measure stage times them (the image default [1, 256] becomes [1, 32])."""
    from prunekit.pipeline.text import text_batches, text_section

    labels = splits.test.labels if splits.kind == "classification" and head else None
    seq = text_section(recipe).latency_sequence
    return TextDeploy(test, labels, example, seq), text_batches(recipe.measure)


def _sparse_variant(run: Any, model: Any, data: Any) -> tuple[TorchVariant, dict]:
    from prunekit.export import sparsify_for_cpu

    e, m = run.recipe.export, run.recipe.measure
    run.log("sparse CPU kernels: timing each sparse layer dense and sparse at every latency batch size")
    res = {b: sparsify_for_cpu(model, b, data.x_test[:8], threads=e.threads, repeats=m.latency_repeats)
           for b in m.latency_batches}
    variant = TorchVariant("pruned, torch sparse kernels", {b: r.model for b, r in res.items()},
                           f"torch sparse CSR/BSR fp32 where measured faster, else dense; {e.threads} thread(s)")
    info = {str(b): {"replaced": r.replaced(), "applied": r.applied, "max_abs_diff": r.max_abs_diff,
                     "decisions": [d.to_dict() for d in r.decisions]} for b, r in res.items()}
    return variant, info


def _sparse_int8_variant(model: Any, out_dir: Path) -> tuple[TorchVariant, dict]:
    from prunekit.export.onnx_export import plain_copy
    from prunekit.export.sparse_int8 import load_sparse_int8, save_sparse_int8

    plain = plain_copy(model, fold_bn=False)
    path = out_dir / SPARSE_INT8_FILE
    info = save_sparse_int8(plain, path, force=True)  # out_dir is this run's staging directory
    plain.load_state_dict(load_sparse_int8(path))
    variant = TorchVariant("pruned, sparse int8 file (loaded, dequantised)", plain,
                           "PyTorch eager fp32 with the int8 weights of the file", info["size_bytes"], str(path))
    return variant, {k: v for k, v in info.items() if k != "path"}


def deploy_markdown(report: dict) -> str:
    """The report.md sections for ``deployed`` / ``dense_deployed`` and ``sparse_cpu`` (empty when the run exported
    nothing)."""
    return _onnx_markdown(report) + _sparse_markdown(report)


def _sparse_markdown(report: dict) -> str:
    if "sparse_cpu" not in report:
        return ""
    out = ["", "## Sparse CPU kernels (torch, sparse layers only where measured faster)", "",
           "Each sparse-enough layer is timed dense and sparse at the batch size; the layers measured faster are "
           "replaced, and kept only if the whole model is then measured faster too.", "",
           "| batch | pruned, dense kernels (ms) | sparse kernels (ms) | speed-up | layers replaced | max abs diff |",
           "|---|---|---|---|---|---|"]
    for b, r in report["sparse_cpu"].items():
        layers = ", ".join(f"`{n}`" for n in r["replaced"]) or "none"
        out.append(f"| {b} | {r['dense_ms']:.3f} | {r['sparse_ms']:.3f} | {r['speedup']:.2f}× | {layers} | "
                   f"{r['max_abs_diff']:.1e} |")
    return "\n".join(out) + "\n"


def _onnx_markdown(report: dict) -> str:
    if "deployed" not in report:
        return ""
    table = report.get("deploy", {}).get("table")
    if not table:  # a report written before the table existed
        table = {k: {"label": k, **v} for k, v in (("dense", report.get("dense_deployed")),
                                                   ("deployed", report["deployed"])) if v}
    batches = list(report["deployed"]["latency_ms"])
    base = table.get("dense_torch") or table.get("dense")
    cols = " | ".join(f"b{b} ms (CPU ms) | b{b} speed-up" for b in batches)
    out = ["", "## Deployed: every variant timed side by side in one run", "",
           "Latency: median wall ms per forward, with the median CPU time of the process per forward in brackets "
           "(on a shared machine wall time grows with the load, CPU time far less). Speed-up: CPU time of "
           f"`{base['label']}` / CPU time of the row (wall-time ratio if no CPU time). Accuracy on the test split, "
           "in the backend named. Size: bytes on disk; zipped: the file deflated (level 9).", "",
           f"| variant | backend | accuracy | {cols} | size | zipped | file |",
           "|---|---|---|" + "---|---|" * len(batches) + "---|---|---|"]
    for r in table.values():
        cells = []
        for b in batches:
            cpu, ref = r.get("cpu_ms", {}).get(b), base.get("cpu_ms", {}).get(b)
            wall = r["latency_ms"][b]
            speed = (ref / cpu) if cpu and ref else base["latency_ms"][b] / wall
            cells.append(f"{wall:.3f} ({cpu:.3f})" if cpu is not None else f"{wall:.3f}")
            cells.append(f"{speed:.2f}×")
        zipped = f"{r['zipped_bytes'] / 1e3:.1f} KB" if r.get("zipped_bytes") else "–"
        path = f"`{r['path']}`" if r.get("path") else "–"
        acc = "–" if r.get("accuracy") is None else f"{r['accuracy']:.2%}"
        if r.get("cosine_to_dense") is not None:
            acc += f" (cosine to dense {r['cosine_to_dense']:.4f})"
        out.append(f"| {r['label']} | {r['backend']} | {acc} | {' | '.join(cells)} | "
                   f"{r['size_bytes'] / 1e3:.1f} KB | {zipped} | {path} |")
    exports = report.get("deploy", {}).get("exports", {})
    if exports:
        out += ["", "Every export verified against PyTorch in ONNX Runtime: " + "; ".join(
            f"{k}: {v['exporter']} exporter, opset {v['opset']}, max abs diff {v['max_abs']:.1e}, max rel diff "
            f"{v['max_rel']:.1e}" for k, v in exports.items()) + "."]
    kernels = report.get("deploy", {}).get("sparse_kernels")
    if kernels:
        out += ["", "Sparse kernels: " + "; ".join(
            f"batch {b}: {', '.join(f'`{n}`' for n in k['replaced']) or 'no layer'} replaced"
            f"{'' if k['applied'] or not k['decisions'] else ' (the whole model was not faster sparse)'}, "
            f"max abs diff to the masked model {k['max_abs_diff']:.1e}" for b, k in kernels.items()) + "."]
    return "\n".join(out) + "\n"


@EXPORTERS.register("sparse_cpu")
def sparse_cpu_format(run: Any, saved: Any) -> dict:
    """The ``sparse_cpu`` export format: the pruned model with torch sparse CSR/BSR kernels wherever they are
    measured faster (:func:`prunekit.export.sparsify_for_cpu`, one decision per layer and batch size), timed side by
    side with the pruned model as stored (masks folded, dense kernels) at each of ``measure.latency_batches``.
    Writes ``sparse_cpu.json`` (every decision); the report gains ``sparse_cpu``."""
    from prunekit.export import sparsify_for_cpu
    from prunekit.export.onnx_export import plain_copy
    from prunekit.measure import compare_latency

    m, t = run.recipe.measure, saved.measured.trained
    model = plain_copy(t.built.model, fold_bn=False).cpu()
    data = t.built.data
    run.log("sparse CPU kernels: timing each sparse layer dense and sparse at every latency batch size")
    out: dict[str, Any] = {"threads": run.recipe.export.threads, "batches": {}}
    for b in m.latency_batches:
        res = sparsify_for_cpu(model, b, data.x_test[:8], threads=run.recipe.export.threads,
                               repeats=m.latency_repeats)
        dense_ms, sparse_ms = res.dense_ms, res.sparse_ms  # the whole-model check, timed side by side
        if dense_ms is None:  # no layer was faster sparse: the model stays as it is
            with torch_threads(run.recipe.export.threads):
                dense_ms = sparse_ms = compare_latency([model], data.x_test[:1], batch=b,
                                                       repeats=m.latency_repeats)[0].cpu_ms
        out["batches"][str(b)] = {"dense_ms": dense_ms, "sparse_ms": sparse_ms, "applied": res.applied,
                                  "speedup": dense_ms / sparse_ms, "replaced": res.replaced(),
                                  "max_abs_diff": res.max_abs_diff, "decisions": [d.to_dict() for d in res.decisions]}
    atomic_write_text(run.stage_dir / "sparse_cpu.json", json.dumps(out, indent=2))
    return {"files": ["sparse_cpu.json"], "report": {"sparse_cpu": {
        b: {k: v for k, v in r.items() if k != "decisions"} for b, r in out["batches"].items()}}}


def _model_dir(run_dir: Path) -> Path:
    for d in (run_dir, run_dir / "model"):
        if (d / "pruned.json").is_file():
            return d
    raise ConfigError(f"{str(run_dir)!r} holds no saved model (no pruned.json, no model/config.json): give a "
                      "directory written by `prunekit run` or prunekit.save_pruned")


def _run_recipe(run_dir: Path) -> Any:
    recipe_file = next((p for p in (run_dir / "recipe.yaml", run_dir / "model" / "recipe.yaml") if p.is_file()), None)
    if recipe_file is None:
        raise ConfigError(f"{str(run_dir)!r} has no recipe.yaml, so the data to calibrate and evaluate on is unknown: "
                          "give the directory `prunekit run` wrote")
    return load_recipe(recipe_file, notice=None)


def _saved_run(run_dir: Path, recipe: Any) -> tuple[Any, Any, list[int], dict]:
    """The model a run saved, the data :func:`deploy_onnx` measures it on, the batch sizes to time, and notes for
    deploy.json. A text run (``hf:`` model) is loaded as the recipe's export stage has it: the encoder with the
    pruned widths (zero-padded heads removed again), its head, the tokenised test split."""
    from prunekit.data import load_dataset
    from prunekit.models import source_of

    source = source_of(recipe.model.name)
    if source is None or source.kind != "text":
        from prunekit.structured.serialize import load_pruned

        model = load_pruned(_model_dir(run_dir)).cpu().eval()
        data = load_dataset(recipe.data.name, **recipe.data_options())  # with the zoo model's preprocessing
        return model, data, list(recipe.measure.latency_batches), {}
    from prunekit.pipeline.text import load_saved_text, saved_test_inputs

    loaded = load_saved_text(run_dir, recipe)
    model = loaded.model.cpu().eval()
    data = load_dataset(recipe.data.name, **recipe.data_options())
    test, example = saved_test_inputs(recipe, data, loaded)
    text, batches = _text_data(recipe, data, test, example, model.head is not None)
    text.reference = text.embeddings(model)  # no dense model in a run directory: fidelity to the saved model
    return model, text, batches, {"cosine_to_dense": "cosine to the saved model's own PyTorch embeddings (the run "
                                                     "directory holds no dense model)"}


def export_run(run_dir: str | Path, fmt: str = "onnx", *, int8: str | None = None, out: str | Path | None = None,
               force: bool = False, threads: int = 1, exporter: str = "auto") -> dict:
    """Exports the model saved in ``run_dir`` (written by ``prunekit run``) to ``out`` (default ``RUN_DIR/onnx``).

    The data and latency batch sizes come from the run's ``recipe.yaml``. ``out`` is written whole or not at all
    (an existing non-empty one only with ``force``); it receives the ONNX files and ``deploy.json`` (accuracy in
    ONNX Runtime, latency, sizes, the verification of every export). A text run (``hf:`` model) is exported as its
    recipe's ``export`` stage exports it (inputs ``input_ids``, ``attention_mask``; outputs the logits and the
    sentence embedding), with the pruned head counts; ``cosine_to_dense`` is then measured against the saved
    model's own PyTorch embeddings, as the run directory holds no dense model.
    """
    if fmt != "onnx":
        raise ConfigError(f"export_run writes the onnx format, got {fmt!r} (sparse_cpu is a recipe export format: it "
                          "times torch kernels inside a run)")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
    if not (run_dir / "model" / "config.json").is_file():  # a text run's Hugging Face directory, else pruned.json
        _model_dir(run_dir)
    recipe = _run_recipe(run_dir)
    model, data, batches, notes = _saved_run(run_dir, recipe)
    out = Path(out) if out is not None else run_dir / ONNX_DIR
    with staged_output(out, force) as stage:
        rep = deploy_onnx(model, None, data, stage, int8=int8, batches=batches, threads=threads,
                          repeats=recipe.measure.latency_repeats, exporter=exporter)
        rep = {**rep, "run_dir": str(run_dir), "format": fmt, **({"notes": notes} if notes else {})}
        atomic_write_text(stage / "deploy.json", json.dumps(rep, indent=2))
    return rep
