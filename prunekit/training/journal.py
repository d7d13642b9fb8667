"""Checkpoints that let a killed run continue to the same results (``prunekit run … --resume``).

A run is a deterministic sequence of *training phases* (every call of :func:`~prunekit.training.phase.run_phase`:
the dense training, each fine-tuning after a pruning step, distillation, a regime's retraining, a text model's
fine-tuning and distillation, exit-head and channel-gate training) with pruning decisions in between. The
journal numbers the phases and writes, into the run's staging directory:

- at the end of every epoch (``every="epoch"``), the phase's state: model (masks included: they are
  buffers), optimiser, the shuffling generator, torch's global RNG, the step and the history so far;
- at the end of every phase, the model and the global RNG as the phase left them.

A resumed run replays the pipeline from the start: a phase that finished is not trained again (its end state
is loaded), the pruning decisions between phases are recomputed from those same states (so they come out the
same), and the phase that was cut off continues from its last epoch. A per-step callback (the gradual
schedule, soft filters, storing the rewind point) is a :class:`~prunekit.training.phase.StepHook` whose state
(the trajectory so far, the rewind snapshot) is checkpointed with the model; a callback without one keeps state
outside the model, so its phase is trained again from its start rather than resumed or skipped. Files load
with ``torch.load(weights_only=True)``:
tensors and plain containers, never code. Each write goes to a new name and ``state.json`` (the index, written
last and atomically) names it, so a kill at any point leaves the previous checkpoint usable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import OutputWriteError
from prunekit.io.checkpoint import atomic_write_text
from prunekit.training import distributed

__all__ = ["EVERY", "Journal", "PhaseStart", "active", "identity_of", "journaling"]

#: Checkpoint intervals: every epoch (and phase), every phase only, or never (no resume).
EVERY = ("epoch", "phase", "off")
VERSION = 1


@dataclass
class PhaseStart:
    """How :func:`~prunekit.training.train` starts phase ``index``: ``fresh``, ``skip`` (done: end state loaded,
    ``history`` returned) or ``continue`` (from ``epoch``/``step`` with ``history`` so far)."""

    index: int
    mode: str = "fresh"
    epoch: int = 0
    step: int = 0
    history: dict = field(default_factory=dict)


def _fingerprint_diff(a: Any, b: Any, path: str = "recipe") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _fingerprint_diff(a.get(k), b.get(k), f"{path}.{k}")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} then, {b!r} now"


class Journal:
    """The checkpoints of one run in ``directory`` (the staging directory's checkpoint folder).

    Args:
        directory: where checkpoints go.
        every: ``epoch``, ``phase`` or ``off`` (see :data:`EVERY`).
        identity: what must not change between a run and its resumption (recipe, process count, threads).
        resume: read the checkpoint there and replay to it.
        writer: this process writes (rank 0); the others only read.
    """

    def __init__(self, directory: str | Path, every: str = "epoch", identity: dict | None = None,
                 resume: bool = False, writer: bool = True) -> None:
        if every not in EVERY:
            raise OutputWriteError(f"unknown checkpoint interval {every!r}; choose one of: {', '.join(EVERY)}")
        self.dir, self.every, self.writer = Path(directory), every, writer
        self.identity = dict(identity or {})
        self.phase = 0  # phases started in this process
        self.stage = "start"
        self.seconds = 0.0  # spent writing checkpoints
        self.resumed = resume
        self.state = {"version": VERSION, "identity": self.identity, "done": {}, "current": None, "stage": "start"}
        if resume:
            self._load()
        elif writer and every != "off":
            self.dir.mkdir(parents=True, exist_ok=True)
            self._write_index()

    # -- resuming ----------------------------------------------------------------------------------------------
    def _load(self) -> None:
        index = self.dir / "state.json"
        if not index.is_file():
            raise OutputWriteError(f"--resume: {str(self.dir)!r} holds no run state (state.json) to continue from; "
                                   "run again with --force to start over")
        state = json.loads(index.read_text())
        if state.get("version") != VERSION:
            raise OutputWriteError(f"--resume: the checkpoint in {str(self.dir)!r} has format {state.get('version')}"
                                   f", this prunekit writes {VERSION}; run again with --force to start over")
        diff = _fingerprint_diff(state["identity"], self.identity, "run")
        if diff:
            raise OutputWriteError(f"--resume: this run differs from the one that wrote the checkpoint ({diff}); "
                                   "resume with the same recipe, flags and --nproc, or run with --force to start over")
        self.state = state

    @property
    def resuming_at(self) -> str:
        cur = self.state["current"]
        done = len(self.state["done"])
        where = (f"training phase {cur['phase']} after epoch {cur['epoch'] + 1}" if cur
                 else f"after {done} training phase(s)")
        return f"{where} (stage {self.state['stage']})"

    def start_phase(self, model: nn.Module, replayable: bool, hook: Any = None) -> PhaseStart:
        """Numbers the phase that begins; on a resumed run, loads what it can skip (see :class:`PhaseStart`)."""
        self.phase += 1
        k = str(self.phase)
        done, cur = self.state["done"].get(k), self.state["current"]
        if done is not None and done.get("file") and replayable:
            payload = self._read(done["file"])
            if hook is not None and "hook" in payload:
                hook.load_state_dict(payload["hook"])  # first: it may install the masks the model state holds
            model.load_state_dict(payload["model"])
            _set_rng(payload["rng"])
            return PhaseStart(self.phase, "skip", history=done["history"])
        if cur is not None and cur["phase"] == self.phase and replayable:
            return PhaseStart(self.phase, "continue", cur["epoch"] + 1, cur["step"], cur["history"])
        return PhaseStart(self.phase, "fresh")

    def restore_epoch(self, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
                      hook: Any = None) -> None:
        """Loads the cut-off phase's last epoch checkpoint into ``model``, ``opt``, ``gen`` (and ``hook``)."""
        payload = self._read(self.state["current"]["file"])
        if hook is not None and "hook" in payload:
            hook.load_state_dict(payload["hook"])  # first: it may install the masks the model state holds
        model.load_state_dict(payload["model"])
        opt.load_state_dict(payload["optimizer"])
        gen.set_state(payload["generator"])
        _set_rng(payload["rng"])

    def _read(self, name: str) -> dict:
        try:
            return torch.load(self.dir / name, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise OutputWriteError(f"--resume: cannot read checkpoint {str(self.dir / name)!r} ({e}); run again "
                                   "with --force to start over") from None

    # -- writing -----------------------------------------------------------------------------------------------
    def epoch_end(self, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, epoch: int, step: int,
                  history: dict, replayable: bool, hook: Any = None) -> None:
        if not (self.every == "epoch" and replayable):
            return
        rng = _every_rank_rng()  # a collective: every rank takes part, rank 0 writes
        if not self.writer:
            return
        t = time.perf_counter()
        name = f"phase{self.phase}-epoch{epoch + 1}.pt"
        payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                   "rng": rng}
        if hook is not None:
            payload["hook"] = hook.state_dict()
        self._save(name, payload)
        old = (self.state["current"] or {}).get("file")
        self.state["current"] = {"phase": self.phase, "epoch": epoch, "step": step, "history": history, "file": name}
        self._write_index()
        if old and old != name:
            (self.dir / old).unlink(missing_ok=True)
        self.seconds += time.perf_counter() - t

    def phase_end(self, model: nn.Module, history: dict, replayable: bool, hook: Any = None) -> None:
        if self.every == "off":
            return
        rng = _every_rank_rng() if replayable else None
        if not self.writer:
            return
        t = time.perf_counter()
        name = None
        if replayable:
            name = f"phase{self.phase}-end.pt"
            payload = {"model": model.state_dict(), "rng": rng}
            if hook is not None:
                payload["hook"] = hook.state_dict()
            self._save(name, payload)
        old = (self.state["current"] or {}).get("file")
        self.state["done"][str(self.phase)] = {"file": name, "history": history}
        self.state["current"] = None
        self._write_index()
        if old:
            (self.dir / old).unlink(missing_ok=True)
        self.seconds += time.perf_counter() - t

    def enter_stage(self, name: str) -> None:
        self.stage = name
        if self.writer and self.every != "off" and self.dir.is_dir():
            self.state["stage"] = name
            self._write_index()

    def _save(self, name: str, payload: dict) -> None:
        tmp = self.dir / f".{name}.tmp"
        torch.save(payload, tmp)
        os.replace(tmp, self.dir / name)

    def _write_index(self) -> None:
        atomic_write_text(self.dir / "state.json", json.dumps(self.state, indent=1))


def identity_of(recipe_dict: dict, **extra: Any) -> dict:
    """What a resumed run must share with the original: the recipe (as a hash and as data) and ``extra``."""
    text = json.dumps(recipe_dict, sort_keys=True, default=str)
    return {"recipe": json.loads(text), "recipe_sha256": hashlib.sha256(text.encode()).hexdigest(), **extra}


def _get_rng() -> dict:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _every_rank_rng() -> dict:
    """This process's RNG states, and under torchrun every rank's (``ranks``): ranks draw different amounts of
    random numbers (dropout on their share of a batch), so each resumes with its own."""
    mine = _get_rng()
    if distributed.world_size() == 1:
        return mine
    return {**mine, "ranks": distributed.gather_object(mine)}


def _set_rng(state: dict) -> None:
    ranks = state.get("ranks")
    if ranks is not None and len(ranks) == distributed.world_size():
        state = ranks[distributed.rank()]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_active: Journal | None = None


def active() -> Journal | None:
    """The journal of the run in progress in this process, if any."""
    return _active


@contextlib.contextmanager
def journaling(journal: Journal | None) -> Iterator[Journal | None]:
    """Makes ``journal`` the one :func:`~prunekit.training.train` writes to, for a block."""
    global _active
    before, _active = _active, journal
    try:
        yield journal
    finally:
        _active = before
