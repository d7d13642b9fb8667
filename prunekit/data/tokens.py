"""Tokenised text and dynamic batching: each batch is padded to its own longest sequence, not to ``max_length``.

Texts are tokenised once with the model's own tokenizer (truncated to ``max_length``), then batched by length so
that short sentences are not padded to the longest one of the data set: training batches draw texts of similar
length from a shuffled window (a seeded shuffle of the windows and of the batches keeps the order random),
evaluation batches sort all texts by length and the results come back in the original order.

Example:
    >>> enc = tokenize(tokenizer, ["a fine film", "dull"], max_length=128)
    >>> for idx, batch in enc.batches(batch_size=32):
    ...     logits = model(**batch)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from prunekit.errors import DataError

__all__ = ["Encoded", "tokenize"]

_CHUNK = 512  # texts per tokenizer call (the progress bar moves per chunk)
_WINDOW = 50  # training: batches of similar length are drawn from windows of this many batches


@dataclass
class Encoded:
    """Token ids of many texts (or sentence pairs), unpadded, at most ``max_length`` each."""

    ids: list[list[int]]
    pad_id: int
    max_length: int
    type_ids: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> torch.Tensor:
        return torch.tensor([len(x) for x in self.ids])

    def collate(self, idx: Sequence[int], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` of the texts ``idx``, padded to the longest of them."""
        rows = [self.ids[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            ids[k, : len(r)] = torch.tensor(r)
            mask[k, : len(r)] = 1
        out = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if self.type_ids is not None:
            types = torch.zeros((len(rows), width), dtype=torch.long)
            for k, i in enumerate(idx):
                types[k, : len(self.type_ids[i])] = torch.tensor(self.type_ids[i])
            out["token_type_ids"] = types.to(device)
        return out

    def order(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
              ) -> list[list[int]]:
        """Batches of indices grouped by length (see the module docstring)."""
        n = len(self.ids)
        lengths = self.lengths()
        if not shuffle:
            sorted_idx = torch.argsort(lengths, stable=True).tolist()
            return [sorted_idx[s : s + batch_size] for s in range(0, n, batch_size)]
        perm = torch.randperm(n, generator=generator)
        window = batch_size * _WINDOW
        batches = []
        for s in range(0, n, window):
            chunk = perm[s : s + window]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)].tolist()
            batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """Yields ``(indices, inputs)``; ``inputs`` are keyword arguments of a transformers encoder."""
        for idx in self.order(batch_size, shuffle, generator):
            yield idx, self.collate(idx, device)


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int, progress: bool = False, desc: str = "tokenise",
             texts_b: Sequence[str] | None = None) -> Encoded:
    """Token ids of ``texts`` (or of the pairs ``texts``/``texts_b``) by ``tokenizer``, truncated to ``max_length``.

    Raises:
        DataError: the tokenizer has no padding token, or ``texts`` is empty.
    """
    if not texts:
        raise DataError("no text to tokenise")
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise DataError(f"the tokenizer {type(tokenizer).__name__} has no padding token; set one (e.g. "
                        "tokenizer.pad_token = tokenizer.eos_token) and save it with the model")
    ids: list[list[int]] = []
    types: list[list[int]] | None = [] if texts_b is not None else None
    bar = tqdm(total=len(texts), desc=desc, disable=not progress, leave=False, unit="text")
    for s in range(0, len(texts), _CHUNK):
        a = list(texts[s : s + _CHUNK])
        b = None if texts_b is None else list(texts_b[s : s + _CHUNK])
        out = tokenizer(a, b, truncation=True, max_length=max_length, padding=False)
        ids += [list(x) for x in out["input_ids"]]
        if types is not None:
            types += [list(x) for x in out.get("token_type_ids", [[0] * len(x) for x in out["input_ids"]])]
        bar.update(len(a))
    bar.close()
    return Encoded(ids, int(pad), max_length, types)
