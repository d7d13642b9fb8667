"""``early_exit`` as a registered dynamic method: build (attach, train, choose thresholds), describe the test
split (exit histogram, mean MACs on the path taken, the accuracy-vs-cost curve), save and restore."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.dynamic.base import DYNAMIC_METHODS, BuildContext, DynamicMethod
from prunekit.dynamic.chain import Chain
from prunekit.dynamic.early_exit import EarlyExitConfig, EarlyExitModel, attach_exits, train_exits
from prunekit.dynamic.heads import build_head
from prunekit.dynamic.thresholds import exit_costs, score_exits, select_thresholds, threshold_grid
from prunekit.errors import ModelLoadError

__all__ = ["build_early_exit", "describe_early_exit"]


def build_early_exit(ctx: BuildContext) -> EarlyExitModel:
    cfg: EarlyExitConfig = ctx.options
    data = ctx.data
    device = next(ctx.model.parameters()).device
    model = attach_exits(ctx.model, data.x_val[:2].to(device), data.num_classes, cfg)
    ctx.log(f"early exits after {', '.join(model.chain.names[i] for i in model.points)} ({cfg.head} heads, "
            f"{cfg.train} training, {cfg.epochs} epochs)")
    losses = train_exits(model, data, cfg, seed=ctx.seed)
    costs = exit_costs(model, data.x_val[:1].to(device), latency=cfg.cost == "latency" or cfg.latency_kept is not None)
    scores = score_exits(model, data.x_val, data.y_val)
    if cfg.thresholds:
        model.set_thresholds(list(cfg.thresholds))
        chosen = {"how": "given"}
    else:
        use_latency = cfg.latency_kept is not None or (cfg.macs_kept is None and cfg.cost == "latency")
        cost, static = (costs["ms"], costs["static_ms"]) if use_latency else (costs["macs"], costs["static_macs"])
        sel = select_thresholds(scores, cost, static, max_drop_pt=cfg.max_drop_pt,
                                kept=cfg.macs_kept if cfg.macs_kept is not None else cfg.latency_kept)
        model.set_thresholds(sel.thresholds)
        chosen = {"how": "validation", "cost": "latency" if use_latency else "macs",
                  "val_accuracy": sel.val_accuracy, "full_val_accuracy": sel.full_val_accuracy,
                  "val_cost": sel.val_cost, "val_curve": sel.curve}
    ctx.report.update({"exit_points": [model.chain.names[i] for i in model.points], "thresholds": model.thresholds,
                       "confidence": model.confidence, "train_loss": losses, "path_costs": costs,
                       "selection": chosen,
                       "val_exit_accuracy": scores.correct.float().mean(0).tolist()})
    ctx.log(f"thresholds {', '.join(f'{t:g}' for t in model.thresholds)} (chosen on validation: {chosen['how']})")
    return model


@torch.no_grad()
def describe_early_exit(model: EarlyExitModel, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Test-split facts: exit histogram, accuracy per exit taken, mean MACs per input, the curve."""
    device = next(model.parameters()).device
    costs = exit_costs(model, x[:1].to(device), latency=False)
    scores = score_exits(model, x, y)
    t = torch.tensor(model.thresholds)
    exits = scores.exits(t)
    hist = scores.histogram(t)
    macs = torch.tensor(costs["macs"], dtype=torch.float64)
    correct = scores.correct.gather(1, exits[:, None]).squeeze(1)
    names = [model.chain.names[i] for i in model.points] + ["final"]
    curve = []
    for g in threshold_grid():
        acc, mean = scores.evaluate(torch.full_like(t, g), macs)
        curve.append({"threshold": g, "accuracy": acc, "mean_macs": mean})
    return {
        "method": "early_exit", "mean_macs": float(macs[exits].mean()), "static_macs": costs["static_macs"],
        "exit_names": names, "exit_histogram": hist, "path_macs": costs["macs"],
        "accuracy_by_exit": [float(correct[exits == k].float().mean()) if hist[k] else None for k in range(len(hist))],
        "thresholds": model.thresholds, "confidence": model.confidence, "test_curve": curve,
        "serving_policy": "batch: after each exit the rows above their threshold leave the batch, the rest go on",
    }


def state_early_exit(model: EarlyExitModel) -> tuple[dict, dict[str, torch.Tensor]]:
    spec = {**model.spec, "points": model.points, "thresholds": model.thresholds, "confidence": model.confidence,
            "layout": model.chain.layout_name}
    return spec, {f"heads.{k}": v for k, v in model.heads.state_dict().items()}


def restore_early_exit(static: nn.Module, spec: dict, tensors: dict[str, torch.Tensor]) -> EarlyExitModel:
    try:
        chain = Chain(static, spec["layout"])
        heads = {}
        for i in spec["points"]:
            e = spec["exits"][str(i)]
            heads[int(i)] = build_head(spec["head"], e["features"], int(e["channels"]), int(spec["num_classes"]),
                                       int(spec["head_width"]))
        model = EarlyExitModel(chain, heads, list(spec["thresholds"]), spec["confidence"], spec)
        state = {k[len("heads."):]: v for k, v in tensors.items() if k.startswith("heads.")}
        model.heads.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"dynamic.json: the early_exit spec does not fit the saved heads or model: {e}") from None
    return model.eval()


DYNAMIC_METHODS.register("early_exit")(DynamicMethod(
    "early_exit", EarlyExitConfig, build_early_exit, describe_early_exit, state_early_exit, restore_early_exit,
    summary="exit heads after blocks (BranchyNet); an input leaves at the first confident head"))
