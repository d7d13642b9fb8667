"""The recipe: one YAML file, a section per stage, validated once on load before anything runs.

Example (``recipes/demo.yaml``)::

    version: 2
    name: demo-lenet300-mnist
    data: mnist                                  # or {name: mnist, options: {...}}
    model: lenet300                              # or {name: ..., kwargs: {...}, checkpoint: PATH}
    train: {epochs: 15, lr: 0.05}                # dense training (TrainConfig)
    prune: {method: iterative, importance: l1, sparsity: 0.92, allocation: global, steps: 6}
    recover: {method: finetune, epochs: 4, lr: 0.05}   # fine-tune (or distill) after/while pruning
    measure: {latency_batches: [1, 256], latency_repeats: 20}

``prune.method`` picks a registered method (:data:`prunekit.pipeline.methods.PRUNE_METHODS`); the other
``prune`` keys are that method's options. Numbers mean one thing: ``sparsity`` is the fraction REMOVED, a
``budget`` says what is KEPT (``macs_kept``, ``params_kept``), ``allocation`` is how a target spreads over
layers. An optional ``dynamic`` section (e.g. ``{early_exit: {exits: [layers.0, layers.2]}}``, methods in
:data:`prunekit.dynamic.DYNAMIC_METHODS`) makes the pruned model input-dependent after recovery. Every error
names the key, the bad value and the valid choices. Version-1 recipes convert on load
(:mod:`prunekit.pipeline.convert`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prunekit.data import DATASETS, TEXT_DATASETS
from prunekit.dynamic import DynamicConfig
from prunekit.errors import ConfigError, RecipeError
from prunekit.export import InferenceConfig
from prunekit.export.onnx_export import EXPORTERS as ONNX_EXPORTERS
from prunekit.export.quantize import QUANT_MODES
from prunekit.models import check_model_name, data_options
from prunekit.models.builtin import check_builtin_kwargs
from prunekit.pipeline.methods import PRUNE_METHODS, PruneMethod
from prunekit.pipeline.text import TextSection
from prunekit.pipeline.validate import from_dict, to_dict
from prunekit.recovery import RECOVERY, DistillConfig, RecoveryConfig
from prunekit.registry import Registry
from prunekit.training import TrainConfig

__all__ = ["Recipe", "ModelSection", "DataSection", "TextSection", "PruneSection", "RecoverSection", "MeasureSection",
           "ExportSection", "EXPORTERS", "RECIPE_VERSION", "load_recipe", "parse_recipe", "read_yaml"]

RECIPE_VERSION = 2

#: Export formats the ``export`` stage can write, by name: ``fn(run, saved) -> {"files": [...], "report": {...}}``
#: (``onnx`` is registered by :mod:`prunekit.pipeline.deploy`).
EXPORTERS: Registry = Registry("export format")


@dataclass(frozen=True)
class ModelSection:
    """``name``: a built-in model, a zoo model (``torchvision:NAME``, ``timm:NAME``: built without downloading
    weights, ``num_classes`` from the data), ``hf:PATH`` (a local Hugging Face text encoder with its tokenizer,
    :mod:`prunekit.models.hf`) or ``package.module:factory``; ``kwargs``: the builder's keyword
    arguments; ``checkpoint``: weights to load (``.safetensors`` or a ``torch.save``'d state dict, read with
    ``weights_only``); ``checkpoint_exclude``: key patterns not loaded (e.g. ``[fc.*]``: a fine-tuned model whose
    head had another number of classes keeps a fresh head)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_model_name(self.name)  # built-in names, SOURCE:WHERE (hf:PATH checked on disk), package.module:factory
        for key, value in self.kwargs.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"model.kwargs.{key} is {value}: give a finite number")
        if ":" not in self.name:
            check_builtin_kwargs(self.name, self.kwargs)
        if self.checkpoint_exclude and not self.checkpoint:
            raise ConfigError("checkpoint_exclude says which checkpoint keys to skip: set model.checkpoint too, or "
                              "remove checkpoint_exclude")

    @property
    def kind(self) -> str:
        """``image`` (built-ins and zoo models), ``text`` (token ids: ``hf:PATH``) or ``custom`` (a user's factory)."""
        return check_model_name(self.name)


@dataclass(frozen=True)
class DataSection:
    """``name``: a built-in dataset, ``imagefolder:PATH`` or ``tensors:PATH``; ``options``: its keyword options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind, sep, where = self.name.partition(":")
        DATASETS.get(kind)
        if sep and not where.strip():
            raise ConfigError(f"data {self.name!r} names no path: write {kind}:PATH")


@dataclass(frozen=True)
class RecoverSection(TrainConfig):
    """Recovery after (or while) pruning: ``method`` ``finetune`` or ``distill`` (the dense model teaches,
    Hinton et al. 2015; ``distill``: its settings), trained with the TrainConfig fields given here."""

    epochs: int = 3
    lr: float = 0.01
    method: str = "finetune"
    distill: DistillConfig | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        RECOVERY.get(self.method)
        if self.distill is not None and self.method != "distill":
            raise ConfigError(f"distill is read by method: distill only (here {self.method!r}): set method: distill or "
                              "remove distill")

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})

    def recovery_config(self) -> RecoveryConfig:
        return RecoveryConfig(self.method, self.distill or DistillConfig())


@dataclass(frozen=True)
class MeasureSection:
    """Latency at ``latency_batches`` (median of ``latency_repeats``), dense and pruned timed alternately, both
    prepared as ``inference`` says (BatchNorm folded, channels_last)."""

    latency_batches: list[int] = field(default_factory=lambda: [1, 256])
    latency_repeats: int = 20
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self) -> None:
        if not self.latency_batches or any(b < 1 for b in self.latency_batches):
            raise ConfigError(f"latency_batches must be positive batch sizes, got {self.latency_batches}")
        if self.latency_repeats < 1:
            raise ConfigError(f"latency_repeats must be ≥ 1, got {self.latency_repeats}")


@dataclass(frozen=True)
class ExportSection:
    """``formats``: export formats written beside the saved model (names in :data:`EXPORTERS`; ``onnx``: verified
    ONNX files of the pruned and the dense model, measured in ONNX Runtime, see :mod:`prunekit.pipeline.deploy`);
    ``int8``: also quantise the pruned model, ``static`` (CNNs, calibrated on the training split) or ``dynamic``
    (Linear-heavy and transformer models); ``threads``: ONNX Runtime intra-op threads for the timing;
    ``exporter``: ``auto`` (torch's dynamo exporter, then the TorchScript one), ``dynamo`` or ``torchscript``;
    ``sparse_kernels``: also time the pruned model with torch sparse kernels where measured faster (in the same loop
    as the ONNX files); ``sparse_int8``: also write the pruned weights as a compressed sparse int8 file
    (:mod:`prunekit.export.sparse_int8`), its accuracy measured after loading it back."""

    formats: list[str] = field(default_factory=list)
    int8: str | None = None
    threads: int = 1
    exporter: str = "auto"
    sparse_kernels: bool = False
    sparse_int8: bool = False

    def __post_init__(self) -> None:
        for f in self.formats:
            if f not in EXPORTERS:
                raise ConfigError(f"unknown export format {f!r}; available: "
                                  f"{', '.join(EXPORTERS.names()) or 'none yet'}")
        if self.int8 is not None:
            QUANT_MODES.get(self.int8)
            if "onnx" not in self.formats:
                raise ConfigError(f"export.int8 {self.int8!r} needs the onnx format: set export.formats: [onnx]")
        for key in ("sparse_kernels", "sparse_int8"):
            if getattr(self, key) and "onnx" not in self.formats:
                raise ConfigError(f"export.{key} adds rows to the onnx format's table: set export.formats: [onnx]")
        if self.exporter != "auto":
            ONNX_EXPORTERS.get(self.exporter)
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"export.threads must be an integer ≥ 1, got {self.threads!r}")


@dataclass(frozen=True)
class PruneSection:
    """``method`` (a name in PRUNE_METHODS) and that method's options (its own dataclass)."""

    method: str
    options: Any

    @property
    def spec(self) -> PruneMethod:
        return PRUNE_METHODS.get(self.method)

    @classmethod
    def from_raw(cls, value: Any, path: str) -> PruneSection:
        if not isinstance(value, dict):
            raise RecipeError(f"{path}: expected a mapping, got {value!r}")
        if "method" not in value:
            raise RecipeError(f"{path}: missing required key 'method'; choose one of: "
                              f"{', '.join(PRUNE_METHODS.names())}")
        rest = dict(value)
        name = rest.pop("method")
        try:
            spec = PRUNE_METHODS.get(name)
        except ConfigError as e:
            raise RecipeError(f"{path}.method: {e}") from None
        try:
            return cls(name, from_dict(spec.options, rest, path))
        except RecipeError as e:
            if "unknown key" in str(e):  # say which method does read it
                raise RecipeError(f"{e} (method {name!r}; other methods take other keys)") from None
            raise

    def to_raw(self) -> dict[str, Any]:
        return {"method": self.method, **to_dict(self.options)}


@dataclass(frozen=True)
class Recipe:
    """A whole job: data → model → train → prune → recover → measure → save → export → report."""

    data: DataSection
    model: ModelSection
    prune: PruneSection
    version: int = RECIPE_VERSION
    name: str = "run"
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    recover: RecoverSection | None = None
    measure: MeasureSection = field(default_factory=MeasureSection)
    export: ExportSection = field(default_factory=ExportSection)
    dynamic: DynamicConfig | None = None  # input-dependent pruning on top (prunekit.dynamic), after recovery
    text: TextSection | None = None

    def __post_init__(self) -> None:
        if self.version != RECIPE_VERSION:
            raise ConfigError(f"version {self.version} is not supported; this prunekit reads version {RECIPE_VERSION} "
                              "(and converts version 1)")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be in [0, 2**63), got {self.seed}")
        spec = self.prune.spec
        if spec.reads_recover and self.recover is None:
            object.__setattr__(self, "recover", RecoverSection())
        self._check_combinations(spec)
        self._check_text(spec)

    def _check_text(self, spec: PruneMethod) -> None:
        text_model = self.model.kind == "text"
        text_data = self.data.name.partition(":")[0] in TEXT_DATASETS
        if text_model != text_data:
            raise ConfigError(f"model {self.model.name!r} and data {self.data.name!r} do not fit: a text model "
                              f"(hf:PATH) needs a text dataset ({', '.join(TEXT_DATASETS)}) and a text dataset a text "
                              "model")
        if not text_model:
            distill = self.recover.distill if self.recover is not None else None
            if self.text is not None or (distill is not None and distill.reads_text()):
                keys = ["text"] * (self.text is not None) + [f"recover.distill.{k}" for k in
                                                             (distill.reads_text() if distill else [])]
                raise ConfigError(f"{', '.join(keys)} configure text models (model: hf:PATH) only: remove them")
            return
        if self.dynamic is not None:
            raise ConfigError("a dynamic section is not supported for text models (hf:PATH) yet: remove dynamic")
        if not spec.text:
            raise ConfigError(f"prune.method {self.prune.method!r} does not prune text models; choose one of: "
                              f"{', '.join(n for n in PRUNE_METHODS.names() if PRUNE_METHODS.get(n).text)}")
        if self.text is None:
            object.__setattr__(self, "text", TextSection())
        if self.text.task == "embedding" and self.train.epochs > 0:
            raise ConfigError("text.task embedding uses the pretrained embedding as the dense model: set train.epochs: "
                              "0 (or text.task: classification to fine-tune a classifier first)")

    def _check_combinations(self, spec: PruneMethod) -> None:
        trained = self.train.epochs > 0
        if self.dynamic is not None and self.export.formats:
            raise ConfigError(f"export.formats {self.export.formats} would export the static network without its "
                              f"dynamic parts ({self.dynamic.method}): remove export.formats from a dynamic recipe")
        if spec.needs_dense_run and not trained:
            raise ConfigError(f"prune.method {self.prune.method!r} rewinds to the weights stored before training, so "
                              "it needs a dense run: set train.epochs ≥ 1 (a checkpoint alone has no stored initial "
                              "state)")
        if not spec.reads_recover and self.recover is not None:
            raise ConfigError(f"prune.method {self.prune.method!r} retrains with the train settings and reads no "
                              "recover section: remove recover")
        if self.recover is not None and self.recover.method == "distill" and not trained and \
                self.model.checkpoint is None and self.model.kind != "text":
            raise ConfigError("recover.method 'distill' needs a trained teacher, but the dense model is neither "
                              "trained (train.epochs: 0) nor loaded (model.checkpoint): set train.epochs ≥ 1 or "
                              "model.checkpoint, or use recover.method: finetune")

    def data_options(self) -> dict[str, Any]:
        """``data.options``, on top of a zoo model's own preprocessing where the data is an image folder."""
        return data_options(self.model.name, self.data.name, self.data.options)

    def to_dict(self) -> dict[str, Any]:
        keys = ("version", "name", "seed", "data", "model", "train", "prune", "recover", "dynamic", "measure",
                "export", "text")
        return {k: to_dict(getattr(self, k)) for k in keys if getattr(self, k) is not None}


def _is_v1(raw: dict) -> bool:
    if "version" in raw:
        return raw["version"] == 1
    prune = raw.get("prune")
    old_prune = isinstance(prune, dict) and bool({"criterion", "target", "scope", "schedule"} & set(prune))
    return old_prune or bool({"structured", "finetune", "recovery", "inference", "regularize"} & set(raw))


def _notice(msg: str) -> None:
    print(f"prunekit: note: {msg}", file=sys.stderr, flush=True)


def parse_recipe(raw: Any, source: str = "recipe", notice: Callable[[str], None] | None = _notice) -> Recipe:
    """Validates parsed YAML and returns a :class:`Recipe`; a version-1 recipe is converted first (with a
    one-line ``notice``).

    Raises:
        RecipeError: naming the key, the bad value and the valid choices.
    """
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    if _is_v1(raw):
        from prunekit.pipeline.convert import convert_v1

        raw = convert_v1(raw, source)
        if notice is not None:
            notice(f"{source} is a version-1 recipe, converted on load; `prunekit convert-recipe {source} NEW.yaml` "
                   "writes the version-2 form")
    raw = dict(raw)
    for key in ("model", "data"):
        if isinstance(raw.get(key), str):
            raw[key] = {"name": raw[key]}
    return from_dict(Recipe, raw, "recipe")


def read_yaml(path: str | Path) -> Any:
    """Parses a recipe file; a missing, non-UTF-8 or invalid file is a one-line :class:`RecipeError`."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file {str(p)!r} does not exist")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RecipeError(f"{p}: not UTF-8 text (byte {e.start}); save the recipe as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{p}: not valid YAML{where}: {problem}") from None


def load_recipe(path: str | Path, notice: Callable[[str], None] | None = _notice) -> Recipe:
    """Reads and validates a recipe file (either version)."""
    return parse_recipe(read_yaml(path), str(path), notice)
