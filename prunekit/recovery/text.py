"""Distillation for text encoders: the dense model teaches the pruned one on (mostly unlabelled) text.

The loss on a batch is a sum of terms, each with its weight in :class:`~prunekit.recovery.DistillConfig`:

- logits (classification): Hinton et al. 2015, α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α)·CE(z_s, y),
  the cross-entropy over the texts that have a label;
- sentence embedding: ``embedding_weight`` · (1 − cos(e_s, e_t)) (or MSE), as in Reimers & Gurevych 2020
  ("Making monolingual sentence embeddings multilingual using knowledge distillation");
- hidden states: ``hidden_weight`` · mean over layers of MSE(H_s^l, H_t^l) (TinyBERT, Jiao et al. 2020; head and
  FFN pruning keep the hidden size, so no projection is needed);
- attention maps: ``attention_weight`` · mean over layers of MSE of the head-averaged attention probabilities
  (TinyBERT matches per head; after head pruning the heads differ in number, so their mean is matched).

Example:
    >>> hist = distill_text(student, teacher, enc, labels, TrainConfig(epochs=2, lr=1e-4, optimizer="adam"),
    ...                     DistillConfig(alpha=0.5, embedding_weight=1.0))
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.data.tokens import Encoded
from prunekit.errors import ConfigError
from prunekit.recovery.distill import DistillConfig
from prunekit.training import TrainConfig
from prunekit.training.loop import TrainHistory
from prunekit.training.text import predict, train_text

__all__ = ["distill_text", "text_distill_loss"]


def _teacher_targets(teacher: Any, enc: Encoded, batch_size: int, progress: bool) -> dict[str, torch.Tensor]:
    """The teacher's logits and sentence embeddings for every text, in one pass (cached over the epochs)."""
    def both(**inputs):
        out = teacher.states(**inputs)
        pooled = teacher.pool(out.last_hidden_state, inputs.get("attention_mask"))
        emb = teacher.finish(pooled)
        parts = [emb] if teacher.head is None else [emb, teacher.head(pooled)]
        return torch.cat(parts, dim=1)

    out = predict(teacher, enc, batch_size, progress, "teacher", fn=both)
    width = teacher.encoder.config.hidden_size
    return {"embedding": out[:, :width], "logits": out[:, width:] if teacher.head is not None else None}


def text_distill_loss(student: Any, teacher: Any, d: DistillConfig, labels: torch.Tensor | None,
                      cached: dict[str, torch.Tensor]):
    """``loss_fn(model, inputs, idx)`` for :func:`~prunekit.training.text.train_text` (see the module docstring).

    ``labels`` holds −1 for texts without a label; ``cached`` the teacher's logits/embeddings per text.
    """
    layers = d.hidden_weight > 0 or d.attention_weight > 0
    logit_kd = student.head is not None and cached.get("logits") is not None

    def loss_fn(model: nn.Module, inputs: dict[str, torch.Tensor], idx: list[int]) -> torch.Tensor:
        mask = inputs.get("attention_mask")
        extra = {"output_hidden_states": d.hidden_weight > 0, "output_attentions": d.attention_weight > 0}
        out = model.states(**inputs, **extra) if layers else model.states(**inputs)
        pooled = model.pool(out.last_hidden_state, mask)
        dev = pooled.device
        loss = pooled.new_zeros(())
        if logit_kd:
            z_s, z_t = model.head(pooled), cached["logits"][idx].to(dev)
            t = d.temperature
            kd = F.kl_div(F.log_softmax(z_s / t, 1), F.log_softmax(z_t / t, 1), reduction="batchmean",
                          log_target=True)
            loss = loss + d.alpha * t * t * kd
            if labels is not None and d.alpha < 1:
                y = labels[idx].to(dev)
                if bool((y >= 0).any()):
                    loss = loss + (1 - d.alpha) * F.cross_entropy(z_s, y, ignore_index=-1)
        if d.embedding_weight > 0:
            e_s, e_t = model.finish(pooled), cached["embedding"][idx].to(dev)
            term = (1 - F.cosine_similarity(e_s, e_t, dim=1)).mean() if d.embedding_loss == "cosine" \
                else F.mse_loss(e_s, e_t)
            loss = loss + d.embedding_weight * term
        if layers:
            with torch.no_grad():
                t_out = teacher.states(**inputs, **extra)
            loss = loss + _layer_terms(out, t_out, d, mask)
        return loss

    return loss_fn


def _layer_terms(s_out: Any, t_out: Any, d: DistillConfig, mask: torch.Tensor | None) -> torch.Tensor:
    total = s_out.last_hidden_state.new_zeros(())
    if d.hidden_weight > 0:
        hs, ht = s_out.hidden_states, t_out.hidden_states
        if len(hs) != len(ht):
            raise ConfigError(f"distill.hidden_weight: the student has {len(hs) - 1} layers, the teacher "
                              f"{len(ht) - 1}; hidden states are matched layer by layer (set hidden_weight: 0)")
        w = mask.unsqueeze(-1).to(hs[0].dtype) if mask is not None else torch.ones_like(hs[0][..., :1])
        per = [((a - b) ** 2 * w).sum() / (w.sum() * a.shape[-1]) for a, b in zip(hs, ht, strict=True)]
        total = total + d.hidden_weight * torch.stack(per).mean()
    if d.attention_weight > 0:
        att_s, att_t = s_out.attentions, t_out.attentions
        if not att_s or att_s[0] is None:
            raise ConfigError("distill.attention_weight: the model returns no attention maps; load it with "
                              "attn_implementation='eager' (the text pipeline does so when attention_weight > 0)")
        per = [F.mse_loss(a.mean(1), b.mean(1)) for a, b in zip(att_s, att_t, strict=True)]
        total = total + d.attention_weight * torch.stack(per).mean()
    return total


def distill_text(student: Any, teacher: Any, enc: Encoded, labels: torch.Tensor | None, cfg: TrainConfig,
                 d: DistillConfig, seed: int = 0, val: tuple[Encoded, torch.Tensor] | None = None,
                 progress: bool = True) -> TrainHistory:
    """Trains ``student`` to match ``teacher`` on ``enc`` (see the module docstring); returns the history.

    Raises:
        ConfigError: nothing to learn (an embedding model with every weight 0, or no labels and no logit term).
    """
    logit_term = student.head is not None and d.alpha > 0
    if not (logit_term or d.embedding_weight or d.hidden_weight or d.attention_weight):
        raise ConfigError("distillation has no term: an embedding model learns from the teacher's embedding; set "
                          "recover.distill.embedding_weight > 0 (or hidden_weight / attention_weight)")
    teacher.eval()
    cached = _teacher_targets(teacher, enc, cfg.batch_size, progress)
    loss_fn = text_distill_loss(student, teacher, d, labels, cached)
    return train_text(student, enc, labels, cfg, seed, loss_fn, val, progress, desc="recover (distill)")
