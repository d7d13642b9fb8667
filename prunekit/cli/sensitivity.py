"""``prunekit sensitivity``: per-group (or per-layer) sensitivity curves, as a table, JSON and a plot."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import torch

from prunekit.cli._flags import add_deprecated_alias
from prunekit.data import load_dataset
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import Calibration, ImportanceConfig, check_needs, get, names, score_groups, score_weights
from prunekit.io.checkpoint import atomic_write_text
from prunekit.io.outdir import check_output_dir, staged_output
from prunekit.measure import threads
from prunekit.models import build_model, check_model_name, data_options
from prunekit.report import have_matplotlib
from prunekit.sensitivity import DEFAULT_RATIOS, SensitivityConfig, analyze, analyze_weights, plot_sensitivity
from prunekit.training import TrainConfig, evaluate, train


def _ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ratios: expected comma-separated numbers, got {text!r}") from None


def _scanned(name: str, exclude: tuple[str, ...]) -> bool:
    return not any(name == e or name.startswith(f"{e}.") for e in exclude)


def _image_setup(args: argparse.Namespace) -> _Setup:
    data = load_dataset(args.data, **data_options(args.model, args.data))  # a zoo model's preprocessing
    model = build_model(args.model, data.input_shape, data.num_classes, None, args.checkpoint)
    _check_inputs(model, data.x_train[:1], args)
    if args.checkpoint is None and args.epochs:
        lr = 0.05 if args.lr is None else args.lr
        train(model, data, TrainConfig(epochs=args.epochs, lr=lr), seed=args.seed, progress=False)
    cal = Calibration.from_data(data.x_train, data.y_train, args.samples, args.seed) if args.samples else None
    weights = [n for n, p in model.named_parameters() if p.dim() >= 2]
    return _Setup(model, data.x_train[:1], cal, data.x_val, data.y_val, weights)


def _text_setup(args: argparse.Namespace) -> _Setup:
    """A text classifier (``hf:PATH``: the encoder, mean pooling, a linear head) fine-tuned on labelled text, the
    held-out texts tokenised, calibration texts with their attention mask; BERT's pooler is not scanned."""
    from prunekit.data import TextSplits
    from prunekit.data.tokens import tokenize
    from prunekit.io.checkpoint import load_weights_into
    from prunekit.pipeline.text import load_text
    from prunekit.training import EvalResult
    from prunekit.training.text import text_accuracy, train_text

    data = load_dataset(args.data)
    if not isinstance(data, TextSplits) or data.kind != "classification":
        raise ConfigError(f"--model {args.model} is a text model: give labelled text (--data rotten-tomatoes, or "
                          f"text:FILE.csv with columns text and label), not {args.data!r}")
    loaded = load_text(args.model, "classification", data.num_classes)
    model, tok = loaded.model, loaded.tokenizer
    length = min(args.max_length, loaded.max_positions or args.max_length)
    gen = torch.Generator().manual_seed(args.seed)
    if args.checkpoint:
        load_weights_into(model, args.checkpoint)
    elif args.epochs:
        cfg = TrainConfig(epochs=args.epochs, lr=1e-4 if args.lr is None else args.lr, optimizer="adam",
                          batch_size=32, weight_decay=0.0)
        train_text(model, tokenize(tok, data.train.texts, length), data.train.labels, cfg, args.seed, progress=False)
    idx = torch.randperm(len(data.val), generator=gen)[:args.max_samples]
    val = tokenize(tok, [data.val.texts[i] for i in idx.tolist()], length)
    cal = None
    if args.samples:
        pick = torch.randperm(len(data.train), generator=gen)[:args.samples]
        batch = tokenize(tok, [data.train.texts[i] for i in pick.tolist()], length).collate(list(range(len(pick))))
        cal = Calibration(batch["input_ids"], data.train.labels[pick], 32, attention_mask=batch["attention_mask"])
    kept = model.kept_whole()
    weights = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and _scanned(n, kept)]
    return _Setup(model, val.collate([0]), cal, val, data.val.labels[idx], weights,
                  lambda m, x, y: EvalResult(*text_accuracy(m, x, y)), kept)


def _check_inputs(model: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace) -> None:
    """One forward before any training, so a model that cannot take the data's inputs fails in one line."""
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    except Exception as e:
        first = (str(e).splitlines() or [""])[0]
        raise ConfigError(f"--model {args.model} cannot take the inputs of --data {args.data} (shape "
                          f"{list(x.shape)}): {type(e).__name__}: {first}; give data the model takes (a torchvision "
                          f"or timm model: --data imagefolder:DIR, which gets the model's own preprocessing)") from None
    finally:
        model.train(was)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sensitivity", help="prune each group alone at increasing ratios; write a table, JSON and a plot",
        description="Trains MODEL on DATA (or loads --checkpoint), then for every prunable group (or, with "
        "--unstructured, every layer's weights) removes the lowest-scoring fraction of units alone at each "
        "ratio and records validation accuracy and loss. Writes sensitivity.md, sensitivity.json and "
        "sensitivity.png to --out.")
    p.add_argument("--model", default="resnet_mini",
                   help="a model name as recipes take it: built-in (lenet300, lenet5, resnet_mini, cnn1d), "
                        "torchvision:NAME or timm:NAME (built without weights; load yours with --checkpoint), "
                        "package.module:factory, or hf:PATH (a text encoder with a classification head, fine-tuned "
                        "on --data: labelled text)")
    p.add_argument("--data", default="digits",
                   help="a dataset name: built-in (digits, mnist, mnist1d), imagefolder:DIR (with a torchvision/timm "
                        "model's own preprocessing), tensors:FILE, or labelled text (rotten-tomatoes, text:FILE) for "
                        "an hf: model")
    p.add_argument("--checkpoint", help="weights to load instead of training")
    p.add_argument("--epochs", type=int, default=3, help="dense training epochs (without --checkpoint)")
    p.add_argument("--lr", type=float, default=None,
                   help="dense training learning rate (default 0.05, SGD; a text model: 1e-4, Adam)")
    p.add_argument("--max-length", type=int, default=128, help="text models: tokens per text at most")
    p.add_argument("--importance", default="l2", choices=names(at_init=False), metavar="NAME",
                   help="the criterion that orders the units within a group (group form: "
                        f"{', '.join(names('group', at_init=False))}) or, with --unstructured, the weights of a "
                        f"layer (weight form: {', '.join(names('weight', at_init=False))})")
    add_deprecated_alias(p, "--criterion", "--importance", "importance", choices=names(at_init=False))
    p.add_argument("--ratios", type=_ratios, default=DEFAULT_RATIOS, help="comma-separated ratios in (0, 1)")
    p.add_argument("--samples", type=int, default=256, help="calibration samples for data-driven criteria")
    p.add_argument("--max-samples", type=int, default=1000, help="validation samples per evaluation")
    p.add_argument("--unstructured", action="store_true", help="per-layer single-weight curves instead of groups")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory (must be empty or absent unless --force)")
    p.add_argument("--force", action="store_true", help="replace an output directory that holds results")
    p.set_defaults(func=run)


@dataclass
class _Setup:
    """What the scan needs, for image/tensor models and for text models alike."""

    model: torch.nn.Module
    example: Any  # one input batch (graph capture)
    calibration: Calibration | None
    x_val: Any
    y_val: torch.Tensor
    weights: list[str]  # the parameters --unstructured scans
    evaluate: Any = evaluate
    exclude: tuple[str, ...] = ()  # modules whose groups are not scanned


def run(args: argparse.Namespace) -> int:
    config = SensitivityConfig(ratios=args.ratios, max_samples=args.max_samples, seed=args.seed)
    kind = "weight" if args.unstructured else "group"
    get(args.importance, kind)  # raises listing the criteria of that kind
    if args.samples < 0:
        raise ConfigError(f"--samples must be ≥ 0, got {args.samples}")
    if args.samples == 0:
        check_needs(args.importance, None, True, kind)  # raises with the criterion's needs
    text = check_model_name(args.model) == "text"  # named by the model-source registry (hf:PATH)
    check_output_dir(args.out, args.force)  # fail before any training
    torch.manual_seed(args.seed)
    s = _text_setup(args) if text else _image_setup(args)
    s.model.eval()
    if args.unstructured:
        scores = score_weights(s.model, s.weights, args.importance, s.calibration, s.example, seed=args.seed)
        sens = analyze_weights(s.model, s.x_val, s.y_val, scores, config, args.importance, evaluate=s.evaluate)
    else:
        graph = DependencyGraph.build(s.model, s.example)
        groups = [g for g in graph.prunable_groups() if all(_scanned(m.name, s.exclude) for m in g.members)]
        importance = ImportanceConfig(args.importance, seed=args.seed)
        sens = analyze(graph, s.x_val, s.y_val, score_groups(graph, importance, s.calibration, groups), config,
                       args.importance, evaluate=s.evaluate, groups=groups)
    table = sens.to_markdown()
    with staged_output(args.out, args.force) as stage:
        atomic_write_text(stage / "sensitivity.json", json.dumps(
            {**sens.to_dict(), "model": args.model, "dataset": args.data, "seed": args.seed,
             "threads": threads.current().to_dict()}, indent=2))
        atomic_write_text(stage / "sensitivity.md", f"# Sensitivity of {args.model} on {args.data}\n\n{table}")
        if have_matplotlib():
            plot_sensitivity(sens, stage / "sensitivity.png")
    print(table)
    print(f"wrote sensitivity.md, sensitivity.json{', sensitivity.png' if have_matplotlib() else ''} to {args.out}")
    return 0
