"""Training on several processes with PyTorch's own engine: ``torchrun`` starts them, ``torch.distributed``
connects them (gloo on CPU, nccl on GPU) and :class:`~torch.nn.parallel.DistributedDataParallel` averages the
gradients.

What prunekit keeps true across the processes (ranks):

- **The batch size is global, the batches are one process's.** A recipe's ``batch_size`` is the batch of one
  optimiser step over all ranks. Every rank draws the same shuffled batches as one process would (same
  generator, same augmentation) and computes on its share (samples ``rank``, ``rank + N``, …; about
  ``batch_size / N``), its loss weighted so that the averaged gradient is the whole batch's mean-loss
  gradient (:func:`split_batch`), and BatchNorm normalises with the whole batch's statistics
  (:func:`global_batchnorm`). So the learning rate, the steps per epoch, the schedule and the samples that
  meet in a step are those of one process, and the trained weights differ from one process's only by
  summation order. (torch's ``DistributedSampler`` shards each *epoch* instead, which changes which samples
  meet in a step; a per-rank BatchNorm changes the statistics.)
- **One model state.** Every rank builds the model from the same seed; each training phase wraps it in DDP
  afresh, which broadcasts rank 0's parameters and buffers (masks are buffers), so a phase that follows a
  structural change trains the changed model with a new optimiser; at its end rank 0's parameters and buffers
  (BatchNorm statistics included) are copied to every rank again (:func:`sync_state`).
- **One set of pruning decisions.** Scores, masks and removed units are computed on every rank from that same
  state and the same (unsharded) calibration data, and rank 0's masks and removal plans are broadcast and
  applied on every rank (:func:`agree`: the decision is made once, on rank 0); before and after every training
  phase :func:`check_same` compares a hash of the masks and of the architecture across ranks and stops the run
  on a mismatch (the failure other tools had: ranks silently pruning different weights).
- **Masks stay applied**: the mask hooks re-apply ``W ⊙ M`` before every forward on every rank.
- **Only rank 0 writes** (the runner's job); the other ranks stop after the last training stage.
- **No hang**: collectives time out after :data:`TIMEOUT_S` (``PRUNEKIT_DIST_TIMEOUT``), so a dead rank ends
  the job with an error; under torchrun the launcher also stops the others as soon as one exits.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import types
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from prunekit.errors import PrunekitError

__all__ = ["TIMEOUT_S", "DistributedMismatchError", "init_from_env", "world_size", "rank", "is_writer",
           "check_same", "sync_state", "broadcast_object", "decisions_from_rank0", "agree", "agree_masks",
           "gather_object", "shutdown", "split_batch", "split_indices", "global_batchnorm", "wrap", "wrap_call",
           "describe", "state_digest"]

#: Seconds a collective waits for the other ranks before the job fails (a dead rank must not hang it).
TIMEOUT_S = 45


class DistributedMismatchError(PrunekitError):
    """Ranks disagree: their masks or architectures differ, or one of them failed a check the others passed."""


def _env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_from_env() -> bool:
    """Joins the process group torchrun describes (``WORLD_SIZE`` > 1); returns whether there is one.
    gloo on CPU, nccl when CUDA is present (each rank on the GPU ``LOCAL_RANK``)."""
    if dist.is_initialized():
        return True
    if _env_world() <= 1:
        return False
    backend = "gloo"
    if torch.cuda.is_available():
        backend = "nccl"
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    timeout = float(os.environ.get("PRUNEKIT_DIST_TIMEOUT", TIMEOUT_S))
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    return True


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_writer() -> bool:
    """Whether this process writes outputs (rank 0, or the only process)."""
    return rank() == 0


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def describe(batch_size: int | None = None) -> dict | None:
    """The report's record of the run's processes (None for one process)."""
    n = world_size()
    if n == 1:
        return None
    out = {"world_size": n, "backend": dist.get_backend(), "batch_size": "global (per optimiser step, all ranks)"}
    if batch_size is not None:
        out["per_process_batch"] = f"{batch_size // n}-{-(-batch_size // n)}"
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (the object itself with one process)."""
    if world_size() == 1:
        return obj
    box = [obj if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


_deciding_once = False  # inside decisions_from_rank0(): agree() hands every rank rank 0's decision


@contextlib.contextmanager
def decisions_from_rank0() -> Iterator[None]:
    """Within the block (a pipeline run), every pruning decision that passes :func:`agree` is rank 0's on every
    rank. Outside it :func:`agree` is a no-op, so that a user's script may call the library on one rank alone."""
    global _deciding_once
    before, _deciding_once = _deciding_once, True
    try:
        yield
    finally:
        _deciding_once = before


def agree(decision: Any) -> Any:
    """Rank 0's ``decision`` (masks, a removal plan) on every rank, inside :func:`decisions_from_rank0` under
    torchrun; ``decision`` itself otherwise. Every rank computes it (in parallel: the others would wait anyway),
    rank 0's is broadcast and applied everywhere, so no rank can prune other weights than rank 0 even when its
    scores differ (a criterion timed anew, a tie broken another way)."""
    if not _deciding_once or world_size() == 1:
        return decision
    return broadcast_object(decision)


def agree_masks(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`agree` for 0/1 masks (sent as booleans: a quarter of the bytes), returned in their own dtype and
    device."""
    if not _deciding_once or world_size() == 1:
        return masks
    got = broadcast_object({n: m.detach().to("cpu", torch.bool) for n, m in masks.items()})
    return {n: got[n].to(m.device, m.dtype) for n, m in masks.items()}


def gather_object(obj: Any) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` with one process)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def state_digest(model: nn.Module) -> str:
    """A hash of the architecture (every parameter's and buffer's name and shape) and of every mask's values."""
    h = hashlib.sha256()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(f"{name}:{tuple(t.shape)};".encode())
        if name.endswith("_mask"):
            h.update(t.detach().to("cpu", torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def sync_state(model: nn.Module) -> None:
    """Copies rank 0's parameters and buffers to every rank (no-op with one process). After a training phase
    the BatchNorm running statistics differ by rank (each rank's last forwards saw its own share of the
    batches), so every decision that follows starts from rank 0's state."""
    if world_size() == 1:
        return
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


def check_same(model: nn.Module, where: str) -> None:
    """Stops the run unless every rank's masks and architecture equal rank 0's (no-op with one process)."""
    if world_size() == 1:
        return
    digest = state_digest(model)
    digests: list[str | None] = [None] * world_size()
    dist.all_gather_object(digests, digest)
    bad = [r for r, d in enumerate(digests) if d != digests[0]]
    if bad:
        raise DistributedMismatchError(
            f"{where}: rank(s) {bad} hold other masks or another architecture than rank 0; every rank must apply "
            "rank 0's pruning decisions (a pruning step that bypasses distributed.agree: report it as a bug)")


def split_indices(idx: list[int]) -> tuple[list[int], float]:
    """This rank's part of a global batch given as sample indices (``idx[rank::N]``) and the factor its mean loss is
    scaled by so that DDP's average over ranks is the global batch's mean loss: ``N · n_rank / n``. One process:
    ``idx`` itself and 1. A rank left without a sample (a last batch smaller than N) computes on the first sample
    with factor 0, so that every rank still takes the step."""
    n_ranks = world_size()
    if n_ranks == 1:
        return idx, 1.0
    global _local_weight
    mine = idx[rank()::n_ranks]
    _local_weight = 1.0 if mine else 0.0  # a stand-in sample adds nothing to BatchNorm's statistics
    if not mine:
        return idx[:1], 0.0
    return mine, n_ranks * len(mine) / len(idx)


def split_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This rank's part of a global batch of tensors (samples ``rank``, ``rank + N``, …) and its loss factor
    (:func:`split_indices`)."""
    if world_size() == 1:
        return x, y, 1.0
    idx, share = split_indices(list(range(len(x))))
    return x[idx], y[idx], share


_local_weight = 1.0  # 0 while this rank computes on a stand-in sample (see split_batch)


@contextlib.contextmanager
def global_batchnorm(model: nn.Module) -> Iterator[None]:
    """While training, every BatchNorm layer normalises with the statistics of the whole global batch (all ranks'
    shares), as one process would: sums and squared deviations are all-reduced (differentiably, so the
    gradient is the one-process gradient too), and the running statistics follow the global ones. torch's
    SyncBatchNorm does this on GPUs only; this works on gloo as well. No-op with one process."""
    if world_size() == 1:
        yield
        return
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.forward = types.MethodType(_global_bn_forward, m)
    try:
        with warnings.catch_warnings():
            # its successor in torch._functional_collectives is private; this one keeps the autograd rule we need
            warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_reduce is deprecated",
                                    FutureWarning)
            yield
    finally:
        for m in layers:
            del m.forward


def _global_bn_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if not self.training:
        return type(self).forward(self, x)
    from torch.distributed.nn.functional import all_reduce

    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    w = _local_weight
    local_count = torch.tensor([x.numel() / x.shape[1] * w], dtype=x.dtype, device=x.device)
    sums = all_reduce(torch.cat([x.sum(dims) * w, local_count]))  # one collective: the sums and the count
    count = sums[-1:]
    mean = sums[:-1] / count
    var = all_reduce(((x - mean.view(shape)) ** 2).sum(dims) * w) / count  # biased, as BN normalises
    y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
    if self.affine:
        y = y * self.weight.view(shape) + self.bias.view(shape)
    if self.track_running_stats:
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            n = float(count)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
    return y


class _Call(nn.Module):
    """``fn(model, *args)`` as a module's forward, so that DistributedDataParallel sees the computation."""

    def __init__(self, model: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args: Any) -> Any:
        return self.fn(self.model, *args)


def wrap_call(model: nn.Module, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(model, *args)`` run through DistributedDataParallel (its backward averages the gradients over the
    ranks), for loops whose loss is more than ``model(x)``: a text encoder's states and pooling, exit heads, a
    teacher's targets. Parameters the loss does not reach (BERT's pooler, a frozen backbone) are allowed. One
    process: ``fn`` applied to ``model``."""
    if world_size() == 1:
        return functools.partial(fn, model)
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_Call(model, fn), device_ids=ids, find_unused_parameters=True)


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in DistributedDataParallel (which broadcasts rank 0's parameters and buffers), or itself."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
