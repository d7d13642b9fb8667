"""Early exits (BranchyNet, Teerapittayanon et al. 2016): heads after chosen blocks; at inference an input
leaves at the first head whose confidence is above its threshold, and the rest of the network never runs.

The heads are trained on a frozen backbone with knowledge distillation from the final head (Hinton et al.
2015: ``α·T²·KL(p_final^T ‖ p_k^T) + (1−α)·CE(z_k, y)`` per head), which keeps the backbone — and so the
answer of an input that does not exit — exactly the static model's; or jointly (``Σ_k CE(z_k, y) + CE(z, y)``
over backbone and heads), which may change it. Thresholds are chosen on the validation split
(:mod:`prunekit.dynamic.thresholds`).

Serving policy of a batch (:meth:`EarlyExitModel.forward`): after each exit the confident rows leave the batch
and the rest go on; every input gets the answer it would get alone at batch 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.data.base import DataSplits
from prunekit.dynamic._loop import CosineLoop
from prunekit.dynamic.chain import Chain
from prunekit.dynamic.confidence import CONFIDENCE, check_thresholds
from prunekit.dynamic.heads import HEADS, build_head
from prunekit.errors import ConfigError
from prunekit.training.phase import run_phase

__all__ = ["EarlyExitConfig", "EarlyExitModel", "attach_exits", "train_exits"]


@dataclass(frozen=True)
class EarlyExitConfig:
    """Options of ``dynamic: {early_exit: {...}}``.

    Attributes:
        exits: block boundaries to put heads after (names such as ``layers.1`` or indices); empty: every one.
        head: head kind (:data:`~prunekit.dynamic.heads.HEADS`); ``head_width``: its hidden width.
        confidence: ``max_softmax`` or ``entropy`` (:data:`~prunekit.dynamic.confidence.CONFIDENCE`).
        thresholds: fixed thresholds in (0, 1], one per exit or one for all; empty: chosen on the validation
            split for the budget below.
        max_drop_pt: accuracy budget: the cheapest thresholds whose validation accuracy is at most this many
            points below the full network's.
        macs_kept / latency_kept: a cost budget instead (fraction of the full network's MACs / batch-1 latency
            spent per input on average): the most accurate thresholds within it.
        cost: what the accuracy budget minimises: ``latency`` (per-exit batch-1 CPU time, measured) or ``macs``.
        train: ``frozen`` (backbone fixed, heads distilled from the final head) or ``joint``.
        epochs, lr, batch_size: head training; ``temperature``, ``alpha``: the distillation.
    """

    exits: list[int | str] = field(default_factory=list)
    head: str = "conv"
    head_width: int = 32
    confidence: str = "max_softmax"
    thresholds: list[float] = field(default_factory=list)
    max_drop_pt: float = 0.5
    macs_kept: float | None = None
    latency_kept: float | None = None
    cost: str = "latency"
    train: str = "frozen"
    epochs: int = 3
    lr: float = 0.003
    batch_size: int = 64
    temperature: float = 3.0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        HEADS.get(self.head)
        CONFIDENCE.get(self.confidence)
        check_thresholds(self.thresholds)
        if self.train not in ("frozen", "joint"):
            raise ConfigError(f"unknown early_exit.train {self.train!r}; choose one of: frozen, joint")
        if self.cost not in ("latency", "macs"):
            raise ConfigError(f"unknown early_exit.cost {self.cost!r}; choose one of: latency, macs")
        if self.macs_kept is not None and self.latency_kept is not None:
            raise ConfigError("give one cost budget, macs_kept or latency_kept, not both")
        for name in ("macs_kept", "latency_kept"):
            v = getattr(self, name)
            if v is not None and not 0 < v <= 1:
                raise ConfigError(f"early_exit.{name} must be in (0, 1] (the fraction of the full network's cost "
                                  f"spent per input), got {v!r}")
        if not self.max_drop_pt >= 0:
            raise ConfigError(f"early_exit.max_drop_pt must be ≥ 0 (points of accuracy), got {self.max_drop_pt!r}")
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0 or self.head_width < 1:
            raise ConfigError(f"need epochs ≥ 0, batch_size ≥ 1, lr > 0, head_width ≥ 1; got {self.epochs}, "
                              f"{self.batch_size}, {self.lr}, {self.head_width}")
        if not 0 <= self.alpha <= 1 or not self.temperature > 0:
            raise ConfigError(f"need alpha in [0, 1] and temperature > 0, got {self.alpha}, {self.temperature}")


class EarlyExitModel(nn.Module):
    """A chain with exit heads after some blocks.

    Args:
        chain: the backbone as a :class:`~prunekit.dynamic.chain.Chain`.
        heads: block index → head.
        thresholds: one per head (in index order), each in (0, 1].
        confidence: a name in :data:`~prunekit.dynamic.confidence.CONFIDENCE`.
        spec: JSON-ready description of the heads (kind, width, channels), kept for saving.
    """

    dynamic_method = "early_exit"

    def __init__(self, chain: Chain, heads: dict[int, nn.Module], thresholds: list[float], confidence: str,
                 spec: dict | None = None) -> None:
        super().__init__()
        self.chain = chain
        self.points = sorted(heads)
        self.heads = nn.ModuleDict({str(i): heads[i] for i in self.points})
        self.confidence = confidence
        self._score = CONFIDENCE.get(confidence)
        self.spec = dict(spec or {})
        self.set_thresholds(thresholds)
        self.last_exit: torch.Tensor | None = None  # exit taken by each row of the last batch (len(points) = final)

    def set_thresholds(self, thresholds: list[float]) -> None:
        check_thresholds(thresholds, len(self.points))
        t = list(thresholds) * (len(self.points) if len(thresholds) == 1 else 1)
        self.thresholds = [float(v) for v in t]
        self._by_index = dict(zip(self.points, self.thresholds, strict=True))

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The logits of every head, in order, then the final logits (training, calibration)."""
        out, h = [], self.chain.stem(x)
        for i, block in enumerate(self.chain.blocks):
            h = block(h)
            if i in self._by_index:
                out.append(self.heads[str(i)](h))
        out.append(self.chain.tail(h))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            return self._forward_one(x)
        return self._forward_batch(x)

    def _forward_one(self, x: torch.Tensor) -> torch.Tensor:
        h = self.chain.stem(x)
        for i, block in enumerate(self.chain.blocks):
            h = block(h)
            t = self._by_index.get(i)
            if t is not None:
                z = self.heads[str(i)](h)
                if float(self._score(z)) > t:
                    self.last_exit = torch.tensor([self.points.index(i)])
                    return z
        self.last_exit = torch.tensor([len(self.points)])
        return self.chain.tail(h)

    def _forward_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Confident rows leave the batch at each exit; the rest continue (same answers as batch 1)."""
        h = self.chain.stem(x)
        rows = torch.arange(x.shape[0], device=x.device)
        exit_of = torch.full((x.shape[0],), len(self.points), dtype=torch.long)
        out: torch.Tensor | None = None
        for i, block in enumerate(self.chain.blocks):
            h = block(h)
            t = self._by_index.get(i)
            if t is None:
                continue
            z = self.heads[str(i)](h)
            if out is None:
                out = z.new_empty(x.shape[0], z.shape[-1])
            done = self._score(z) > t
            if bool(done.any()):
                out[rows[done]] = z[done]
                exit_of[rows[done].cpu()] = self.points.index(i)
                keep = ~done
                h, rows = h[keep], rows[keep]
                if rows.numel() == 0:
                    self.last_exit = exit_of
                    return out
        z = self.chain.tail(h)
        if out is None:
            out = z.new_empty(x.shape[0], z.shape[-1])
        out[rows] = z
        self.last_exit = exit_of
        return out


def attach_exits(model: nn.Module, example: torch.Tensor, num_classes: int, cfg: EarlyExitConfig) -> EarlyExitModel:
    """Wraps ``model`` (checked against its own forward on ``example``) with fresh heads at ``cfg.exits``;
    thresholds start at 1 (never exit)."""
    chain = Chain.of(model, example)
    points = sorted({chain.index(e) for e in cfg.exits}) if cfg.exits else list(range(len(chain.boundaries())))
    if cfg.thresholds:
        check_thresholds(cfg.thresholds, len(points))
    shapes = _feature_shapes(chain, example, points)
    heads, spec = {}, {"head": cfg.head, "head_width": cfg.head_width, "exits": {}}
    for i in points:
        kind = chain.feature_kind(torch.empty(shapes[i]))
        channels = shapes[i][-1] if kind in ("tokens", "flat") else shapes[i][1]
        heads[i] = build_head(cfg.head, kind, channels, num_classes, cfg.head_width).to(example.device)
        spec["exits"][str(i)] = {"name": chain.names[i], "features": kind, "channels": int(channels)}
    spec["num_classes"] = num_classes
    return EarlyExitModel(chain, heads, [1.0] * len(points), cfg.confidence, spec)


@torch.no_grad()
def _feature_shapes(chain: Chain, example: torch.Tensor, points: list[int]) -> dict[int, tuple[int, ...]]:
    was = chain.model.training
    chain.model.eval()
    shapes, h = {}, chain.stem(example[:1])
    for i, block in enumerate(chain.blocks):
        h = block(h)
        if i in points:
            shapes[i] = tuple(h.shape)
    chain.model.train(was)
    return shapes


def train_exits(model: EarlyExitModel, data: DataSplits, cfg: EarlyExitConfig, seed: int = 0,
                progress: bool = False) -> list[float]:
    """Trains the heads (``frozen``: backbone fixed, distilled from the final head) or everything (``joint``);
    returns the mean loss of each epoch. A training phase like any other (checkpointed and resumable inside a run;
    under torchrun each rank computes on its share of every global batch, :mod:`prunekit.training.phase`)."""
    torch.manual_seed(seed)
    grad_flags = [(p, p.requires_grad) for p in model.chain.parameters()]
    try:
        if cfg.train == "frozen":
            for p, _ in grad_flags:
                p.requires_grad_(False)
        hist = run_phase(model, lambda: _ExitLoop(model, data, cfg, seed), cfg.epochs, "exit heads", progress)
    finally:
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        model.eval()
    return hist.epoch_loss


class _ExitLoop(CosineLoop):
    """The heads' training: Adam on the heads (frozen backbone, its BatchNorm statistics kept) or SGD on all."""

    def __init__(self, model: EarlyExitModel, data: DataSplits, cfg: EarlyExitConfig, seed: int) -> None:
        self.frozen = cfg.train == "frozen"
        params = list(model.heads.parameters()) if self.frozen else list(model.parameters())
        opt = torch.optim.Adam(params, lr=cfg.lr) if self.frozen else \
            torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
        super().__init__(model, data, cfg.batch_size, cfg.epochs, cfg.lr, seed, opt,
                         lambda m, x, y: _exit_loss(m.forward_all(x), y, cfg))

    def train_mode(self) -> None:
        self.model.train()
        if self.frozen:
            self.model.chain.eval()  # BatchNorm statistics stay the static model's


def _exit_loss(outs: list[torch.Tensor], y: torch.Tensor, cfg: EarlyExitConfig) -> torch.Tensor:
    *heads, final = outs
    if cfg.train == "joint":
        return F.cross_entropy(final, y) + sum(F.cross_entropy(z, y) for z in heads)
    t, a = cfg.temperature, cfg.alpha
    target = (final.detach() / t).softmax(-1)
    loss = final.new_zeros(())
    for z in heads:
        kd = F.kl_div((z / t).log_softmax(-1), target, reduction="batchmean") * t * t
        loss = loss + a * kd + (1 - a) * F.cross_entropy(z, y)
    return loss
