"""Text metrics: Spearman rank correlation (semantic similarity), cosine fidelity of embeddings, and the
token-id example a text model is counted and timed on.

Example:
    >>> spearman(torch.tensor([0.1, 0.5, 0.3]), torch.tensor([1.0, 3.0, 2.0]))
    1.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mean_cosine", "pair_cosines", "ranks", "spearman", "token_example"]


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of ``x``; tied values share the mean of their ranks (as scipy.stats.rankdata)."""
    x = x.double().flatten()
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    r = torch.empty_like(x)
    n, i = len(x), 0
    while i < n:
        j = i
        while j + 1 < n and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ: the Pearson correlation of the ranks of ``a`` and ``b``."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"spearman needs two equally long series of ≥ 2 values, got {len(a)} and {len(b)}")
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom > 0 else float("nan")


def pair_cosines(emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
    """cos(a_i, b_i) for each row pair."""
    return F.cosine_similarity(emb_a.double(), emb_b.double(), dim=1)


def mean_cosine(pruned: torch.Tensor, dense: torch.Tensor) -> float:
    """The mean cosine of each pruned embedding to the dense model's embedding of the same text (1 = the same
    directions)."""
    return float(pair_cosines(pruned, dense).mean())


def token_example(vocab_size: int, sequence: int, special: tuple[int, ...] = (), seed: int = 0) -> torch.Tensor:
    """One sequence of ``sequence`` token ids (shape (1, sequence)) drawn from the vocabulary, seeded, avoiding
    the ``special`` ids: the input text models are counted (MACs) and timed on."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (1, sequence), generator=gen)
    for s in special:
        ids[ids == s] = (s + 1) % vocab_size
    return ids
