"""Pieces several benchmarks share: the seeded dense model they prune, and writing their results.

Every results JSON carries a ``provenance`` object (:func:`provenance`: commit, torch, Python, CPU,
threads, load average at start and end, date, command line) and may carry ``notes``: a list of
Markdown blocks written by whoever ran the benchmark. The Markdown next to it is rendered from the JSON
by the script's ``render(result)`` (``python bench/render.py`` re-renders every file); nothing in
``bench/results/*.md`` is edited by hand.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from prunekit.models import build_model
from prunekit.training import TrainConfig, evaluate, train

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _git_state() -> tuple[str | None, bool | None]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return _git("rev-parse", "HEAD"), None if status is None else bool(status)


#: Load average, time and code version when the benchmark started (this module is imported at the script's
#: start): the commit is the code that ran, even if the checkout moves while a long run goes on.
_START = {"loadavg": list(os.getloadavg()), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
          "git": _git_state()}


def train_dense(name: str, data, cfg: TrainConfig, seed: int) -> tuple[torch.nn.Module, float]:
    """``name`` built under ``seed`` and trained with ``cfg``; returns it and its test accuracy."""
    torch.manual_seed(seed)
    dense = build_model(name, data.input_shape, data.num_classes)
    train(dense, data, cfg, seed=seed, progress=False)
    return dense, evaluate(dense, data.x_test, data.y_test).accuracy


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (None where that file does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def provenance(script: str | None = None) -> dict:
    """How and where this run was measured: written into every results JSON by :func:`write_results`.

    ``commit`` and ``dirty`` are read when the script started; ``dirty`` is True when tracked files differed
    from ``commit`` (the figures may come from uncommitted code); ``threads`` is torch's intra-op thread
    count at the end of the run.
    """
    commit, dirty = _START["git"]
    return {"script": script or Path(sys.argv[0]).name, "command": shlex.join(["python", *sys.argv]),
            "argv": sys.argv[1:], "commit": commit, "dirty": dirty, "torch": torch.__version__,
            "python": platform.python_version(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "loadavg_start": _START["loadavg"], "loadavg_end": list(os.getloadavg()),
            "date_start": _START["date"],
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "reconstructed": False}


def write_json(path: Path, result: dict) -> dict:
    """Writes ``result`` with its :func:`provenance` (kept if already there) to ``path``; returns it."""
    result = {**result, "provenance": result.get("provenance") or provenance()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def write_results(name: str, result: dict, render: Callable[[dict], str]) -> None:
    """Writes ``bench/results/NAME.json`` (with provenance) and ``NAME.md`` (``render(json)``); prints the Markdown."""
    result = write_json(RESULTS / f"{name}.json", result)
    text = render(json.loads(json.dumps(result)))  # render what was written, exactly as bench/render.py will
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def render_footer(result: dict) -> str:
    """The Markdown every results page ends with: the notes (data in the JSON) and the provenance."""
    out = []
    if result.get("notes"):
        out += ["", "## Notes", "", "\n\n".join(result["notes"])]
    p = result.get("provenance")
    if p:
        out += ["", "## Provenance", "", provenance_line(p)]
    return "\n".join(out) + "\n" if out else ""


def render_sources(names: list[str]) -> str:
    """A Markdown section naming the measured files a summary page is built from, each with its provenance."""
    lines = ["", "## Measured in", ""]
    for name in names:
        p = json.loads((RESULTS / name).read_text()).get("provenance")
        lines.append(f"- `{name}`: " + (provenance_line(p) if p else "no provenance recorded."))
    return "\n".join(lines) + "\n"


def provenance_line(p: dict) -> str:
    """One Markdown paragraph saying how a result was measured (unknown fields said so)."""
    def val(key: str) -> str:
        v = p.get(key)
        return "unknown" if v is None else (f"{v[0]:.2f}" if isinstance(v, list) else str(v))

    commit = p.get("commit")
    commit = "unknown" if not commit else commit[:10] + (" (uncommitted changes)" if p.get("dirty") else "")
    head = ("Reconstructed after the fact from the commit that added this file (`git log`); fields not "
            "recorded then are unknown. " if p.get("reconstructed") else "")
    command = f"`{p['command']}`" if p.get("command") else "unknown"
    return (f"{head}Command {command}; commit {commit}; date {val('date')}; torch {val('torch')}, Python "
            f"{val('python')}; CPU {val('cpu')}, {val('threads')} torch thread(s); load average "
            f"{val('loadavg_start')} at the start, {val('loadavg_end')} at the end.")
