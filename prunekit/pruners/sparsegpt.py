"""SparseGPT: one layer pruned by Optimal-Brain-Surgeon reconstruction (Frantar & Alistarh 2023).

The layer-wise problem: given a Linear weight W (rows = outputs, columns = inputs) and its calibration
inputs X (tokens × columns), find a mask M of the target sparsity and new weights Ŵ minimising
‖X Wᵀ − X (M ⊙ Ŵ)ᵀ‖². Every row shares the Hessian of that loss, H = XᵀX (+ λI, λ = ``damp`` ×
mean diag H, so H is invertible when some inputs are correlated or dead).

Optimal Brain Surgeon (Hassibi & Stork 1993): removing weight w_c of a row and updating the others
optimally costs w_c² / [H⁻¹]_cc and changes the row by δ = −(w_c / [H⁻¹]_cc) · H⁻¹[c, :]. SparseGPT
makes this affordable for every row at once by treating the columns in a fixed order 0, 1, …: after
column c is settled (kept or zeroed), only the columns after it may still change, and the inverse
Hessians of those shrinking column sets are exactly the rows of the upper Cholesky factor U of H⁻¹
(H⁻¹ = UᵀU): for column c, δ_{c:} = −(w_c / U_cc) · U[c, c:]. So the algorithm (the paper's
Algorithm 1) is

    U = chol(H⁻¹)ᵀ
    for each block of B columns (lazy batch updates):
        choose the block's mask: the weights with the smallest w_c² / U_cc² go — a fraction p of the
            whole block (adaptive mask selection, the paper's default) or of each row of it; for N:M,
            per row, the M − N smallest of every run of M columns, chosen when the run starts
        for each column c of the block:
            e = (w_c − m_c w_c) / U_cc           (the error of the pruned weights of column c)
            W[:, c:block end] −= e ⊗ U[c, c:block end];   E[:, c] = e
        W[:, block end:] −= E · U[block, block end:]        (one matrix product per block)

Scores use the weights as already updated by earlier columns, which is what lets the mask adapt.
"""

from __future__ import annotations

import torch

from prunekit.errors import ConfigError
from prunekit.pruners.allocations import kth_mask, row_mask
from prunekit.pruners.granularity import nm_mask

__all__ = ["SELECTIONS", "damped_inverse_cholesky", "sparsegpt_prune"]

#: How SparseGPT picks the mask of a column block: ``block`` (a fraction p of the whole rows × B block,
#: the paper's adaptive selection: rows and columns may end with different sparsity) or ``row`` (p of
#: each row of the block). N:M patterns are always chosen per row and run.
SELECTIONS = ("block", "row")


def damped_inverse_cholesky(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """The upper Cholesky factor U of (H + λI)⁻¹, λ = ``damp`` · mean(diag H), in float64.

    Inputs that never fire (H_cc = 0) get H_cc = 1 first: their weights do not change the layer's output on
    the calibration data, so they are scored by their magnitude alone and receive no updates.

    Raises:
        ConfigError: H is not positive definite even after damping (raise ``damp``).
    """
    h = hessian.detach().to(torch.float64).clone()
    diag = torch.diagonal(h)
    diag[diag == 0] = 1.0
    diag += damp * float(diag.mean())
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info):
        raise ConfigError(f"the calibration Hessian is not positive definite with damp={damp}: raise damp "
                          f"(e.g. damp=0.1) or give more calibration tokens than the layer has inputs ({len(h)})")
    return torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)


def _block_mask(w: torch.Tensor, d: torch.Tensor, sparsity: float, selection: str) -> torch.Tensor:
    score = w.pow(2) / d.pow(2).reshape(1, -1)
    if selection == "row":
        return row_mask(score, sparsity)
    return kth_mask(score, round(sparsity * score.numel()))


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, *, sparsity: float | None = None,
                    nm: tuple[int, int] | None = None, blocksize: int = 128, damp: float = 0.01,
                    selection: str = "block", mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prunes one Linear weight with SparseGPT.

    Args:
        weight: (rows, columns), unchanged.
        hessian: (columns, columns), XᵀX summed (or averaged) over the calibration tokens.
        sparsity: fraction of the weights removed (unstructured), or None with ``nm``.
        nm: (N, M): keep N of every M consecutive inputs in each row; columns must be a multiple of M.
        blocksize: B, columns per lazy batch update.
        damp: λ as a fraction of the mean diagonal of H.
        selection: ``block`` or ``row`` (:data:`SELECTIONS`).
        mask: a fixed 0/1 mask (same shape as ``weight``) to reconstruct for instead of choosing one.

    Returns:
        (new weight, mask): the new weight is zero where the mask is, in ``weight``'s dtype; the mask is float.
    """
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise ConfigError(f"the Hessian must be {cols}×{cols} for a weight of shape {tuple(weight.shape)}, "
                          f"got {tuple(hessian.shape)}")
    if (sparsity is None) + (nm is None) + (mask is None) != 2:
        raise ConfigError("sparsegpt_prune takes exactly one of sparsity=, nm= or mask=")
    if nm is not None and (cols % nm[1] or blocksize % nm[1]):
        raise ConfigError(f"N:M {nm[0]}:{nm[1]} needs the input size ({cols}) and blocksize ({blocksize}) to be "
                          f"multiples of M={nm[1]}")
    if selection not in SELECTIONS:
        raise ConfigError(f"selection={selection!r} is not one of: {', '.join(SELECTIONS)}")
    u = damped_inverse_cholesky(hessian, damp)
    w = weight.detach().to(torch.float64).clone()
    keep = torch.ones_like(w) if mask is None else mask.detach().to(torch.float64).clone()
    for b0 in range(0, cols, blocksize):
        b1 = min(b0 + blocksize, cols)
        wb, ub = w[:, b0:b1], u[b0:b1, b0:b1]
        if sparsity is not None:
            keep[:, b0:b1] = _block_mask(wb, torch.diagonal(ub), sparsity, selection)
        err = torch.zeros_like(wb)
        for j in range(b1 - b0):
            if nm is not None and j % nm[1] == 0:
                run = slice(j, j + nm[1])
                score = wb[:, run].pow(2) / torch.diagonal(ub)[run].pow(2).reshape(1, -1)
                keep[:, b0 + j:b0 + j + nm[1]] = nm_mask(score, nm)
            e = wb[:, j] * (1.0 - keep[:, b0 + j]) / ub[j, j]
            wb[:, j:] -= e.reshape(-1, 1) * ub[j, j:].reshape(1, -1)
            err[:, j] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]
    w *= keep
    return w.to(weight.dtype), keep.float()
