"""What :func:`~prunekit.export.deploy_onnx` needs from a task's data, for images and for text.

A deployment exports a model, calibrates int8 on training inputs, measures each variant's quality in its own
backend (PyTorch or ONNX Runtime) and times every variant on the same batch. :class:`ImageDeploy` does that for
tensor data (a ``DataSplits``: top-1 accuracy on the test split); :class:`TextDeploy` for a Hugging Face encoder
(:class:`~prunekit.models.hf.TextModel`) on tokenised text: the exported graph takes ``input_ids`` and
``attention_mask`` (batch and sequence axes dynamic) and returns the logits (classification) and the sentence
embedding, so the ONNX files are measured on both — accuracy on the labels and the mean cosine of each embedding to
the dense PyTorch model's embedding of the same text (1 = same directions) — and timed at ``batch × sequence``
tokens, every token real.

Example:
    >>> rep = deploy_onnx(pruned, dense, TextDeploy(enc_test, y_test, sequence=128), "out", int8="dynamic",
    ...                   batches=(1, 32))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError

__all__ = ["DeployData", "ImageDeploy", "TextDeploy", "as_deploy_data"]


class DeployData:
    """The interface :func:`~prunekit.export.deploy_onnx` uses (see the module docstring)."""

    #: export the batch axis only (False) or the batch and sequence axes (True)
    dynamic_sequence = False

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that is exported and timed (takes the inputs of :meth:`batch` positionally)."""
        return model

    def example(self) -> tuple[torch.Tensor, ...]:
        """A few inputs to export with and check the export on."""
        raise NotImplementedError

    def calibration(self) -> torch.Tensor | None:
        """Inputs to calibrate static int8 on (None: static int8 is not possible)."""
        return None

    def batch(self, size: int) -> tuple[torch.Tensor, ...]:
        """The inputs every variant is timed on, ``size`` samples."""
        raise NotImplementedError

    def torch_metrics(self, model: nn.Module) -> dict[str, float | None]:
        """Quality of a (wrapped) PyTorch model: ``accuracy`` and any more."""
        raise NotImplementedError

    def onnx_metrics(self, session: Any) -> dict[str, float | None]:
        """Quality of an ONNX Runtime session, the same metrics."""
        raise NotImplementedError


@dataclass
class ImageDeploy(DeployData):
    """Tensor data (a ``DataSplits``): top-1 accuracy on the test split; static int8 calibrates on the training
    inputs; timed on the first test sample repeated."""

    data: Any
    batch_size: int = 256

    def example(self) -> tuple[torch.Tensor, ...]:
        return (self.data.x_test[:8],)

    def calibration(self) -> torch.Tensor | None:
        return self.data.x_train

    def batch(self, size: int) -> tuple[torch.Tensor, ...]:
        x = self.data.x_test
        return (x[:1].expand(size, *x.shape[1:]).contiguous(),)

    def _accuracy(self, run: Callable[[torch.Tensor], Any]) -> float:
        x, y, bs = self.data.x_test, self.data.y_test, self.batch_size
        correct = sum(int((torch.as_tensor(run(x[i:i + bs])).argmax(-1) == y[i:i + bs]).sum())
                      for i in range(0, len(x), bs))
        return correct / len(x)

    @torch.no_grad()
    def torch_metrics(self, model: nn.Module) -> dict[str, float | None]:
        was = model.training
        model.eval()
        try:
            return {"accuracy": self._accuracy(model)}
        finally:
            model.train(was)

    def onnx_metrics(self, session: Any) -> dict[str, float | None]:
        name = session.get_inputs()[0].name
        return {"accuracy": self._accuracy(lambda x: session.run(None, {name: x.numpy()})[0])}


class TextOnnx(nn.Module):
    """A :class:`~prunekit.models.hf.TextModel` as one exportable graph: ``(input_ids, attention_mask) →
    (logits, embedding)`` (classification) or ``→ embedding``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        m = self.model
        pooled = m.pool(m.states(input_ids, attention_mask).last_hidden_state, attention_mask)
        embedding = m.finish(pooled)
        return (m.head(pooled), embedding) if m.head is not None else embedding


@dataclass
class TextDeploy(DeployData):
    """Tokenised text (an :class:`~prunekit.data.tokens.Encoded` test split) for a text model.

    Attributes:
        enc: the test texts, tokenised.
        labels: their class labels (None for an embedding model: no accuracy).
        example_ids: ``(1, n)`` token ids the variants are timed on (the first ``sequence`` are used), e.g. the
            pipeline's latency example; None: token 1 repeated.
        sequence: tokens per timed sequence.
        reference: sentence embeddings of ``enc`` by the dense model, set by :func:`deploy_onnx` from the dense
            model it is given (or given here); each variant's ``cosine_to_dense`` is measured against them.
    """

    enc: Any
    labels: torch.Tensor | None
    example_ids: torch.Tensor | None = None
    sequence: int = 128
    batch_size: int = 64
    reference: torch.Tensor | None = field(default=None, repr=False)

    dynamic_sequence = True

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.enc):
            raise ConfigError(f"{len(self.enc)} texts but {len(self.labels)} labels")
        if not isinstance(self.sequence, int) or self.sequence < 2:
            raise ConfigError(f"sequence must be an integer ≥ 2 (tokens per timed sequence), got {self.sequence!r}")

    def wrap(self, model: nn.Module) -> nn.Module:
        return model if isinstance(model, TextOnnx) else TextOnnx(model)

    def example(self) -> tuple[torch.Tensor, ...]:
        batch = self.enc.collate(list(range(min(4, len(self.enc)))))
        return batch["input_ids"], batch["attention_mask"]

    def batch(self, size: int) -> tuple[torch.Tensor, ...]:
        ids = self.example_ids if self.example_ids is not None else torch.ones(1, self.sequence, dtype=torch.long)
        if ids.shape[-1] < self.sequence:
            raise ConfigError(f"example_ids has {ids.shape[-1]} tokens, fewer than sequence={self.sequence}")
        ids = ids[:1, : self.sequence].expand(size, self.sequence).contiguous()
        return ids, torch.ones_like(ids)

    def _run_all(self, run: Callable[[torch.Tensor, torch.Tensor], Any]) -> tuple[torch.Tensor | None, torch.Tensor]:
        logits, emb = [None] * len(self.enc), [None] * len(self.enc)
        for idx, b in self.enc.batches(self.batch_size):
            out = run(b["input_ids"], b["attention_mask"])
            out = out if isinstance(out, (tuple, list)) else (out,)
            out = [torch.as_tensor(np.asarray(o) if not isinstance(o, torch.Tensor) else o).float() for o in out]
            for k, i in enumerate(idx):
                emb[i] = out[-1][k]
                if len(out) > 1:
                    logits[i] = out[0][k]
        return (torch.stack(logits) if logits[0] is not None else None), torch.stack(emb)

    def _metrics(self, logits: torch.Tensor | None, emb: torch.Tensor) -> dict[str, float | None]:
        acc = None
        if logits is not None and self.labels is not None:
            acc = float((logits.argmax(-1) == self.labels).float().mean())
        cos = None
        if self.reference is not None:
            cos = float(F.cosine_similarity(emb.double(), self.reference.double(), dim=1).mean())
        return {"accuracy": acc, "cosine_to_dense": cos}

    @torch.no_grad()
    def embeddings(self, model: nn.Module) -> torch.Tensor:
        """The sentence embeddings of every test text by ``model`` (PyTorch)."""
        return self._run_all(self.wrap(model).eval())[1]

    @torch.no_grad()
    def torch_metrics(self, model: nn.Module) -> dict[str, float | None]:
        was = model.training
        model.eval()
        try:
            return self._metrics(*self._run_all(self.wrap(model)))
        finally:
            model.train(was)

    def onnx_metrics(self, session: Any) -> dict[str, float | None]:
        names = [i.name for i in session.get_inputs()]
        return self._metrics(*self._run_all(
            lambda ids, mask: session.run(None, dict(zip(names, (ids.numpy(), mask.numpy()), strict=True)))))


def as_deploy_data(data: Any) -> DeployData:
    """``data`` as a :class:`DeployData`: itself, or a ``DataSplits`` (tensor data) as :class:`ImageDeploy`."""
    if isinstance(data, DeployData):
        return data
    if hasattr(data, "x_test") and hasattr(data, "y_test"):
        return ImageDeploy(data)
    raise ConfigError(f"deploy needs a DataSplits (tensor data) or a TextDeploy (tokenised text), got "
                      f"{type(data).__name__}")
