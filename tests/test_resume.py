"""A run killed with SIGKILL at any point continues with --resume to the report and weights of a run that was
never stopped (latency and timings aside); a changed recipe or a missing checkpoint is a clear error."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prunekit.cli.main import main
from tests._stop_at import wait_stopped

REPO = Path(__file__).resolve().parents[1]
ITERATIVE = {
    "name": "resume", "seed": 3, "model": "lenet300", "data": "digits",
    "train": {"epochs": 4, "lr": 0.05}, "recover": {"epochs": 3, "lr": 0.01},
    "prune": {"method": "iterative", "importance": "l1", "allocation": "global", "sparsity": 0.8, "steps": 3},
    "measure": {"latency_batches": [1], "latency_repeats": 1},
}
GRADUAL = {**ITERATIVE, "prune": {"method": "gradual", "importance": "l1", "sparsity": 0.8, "steps": 4},
           "recover": {"epochs": 4, "lr": 0.01}}
STRUCTURED = {
    "name": "resume-structured", "seed": 0, "model": "resnet_mini", "data": "digits",
    "train": {"epochs": 3, "lr": 0.05}, "recover": {"epochs": 3, "lr": 0.01},
    "prune": {"method": "structured", "importance": "l1", "budget": {"macs_kept": 0.6}},
    "measure": {"latency_batches": [1], "latency_repeats": 1},
}
SOFT_FILTER = {**STRUCTURED, "name": "resume-soft", "prune": {"method": "soft_filter", "sparsity": 0.3}}
LOTTERY = {**{k: v for k, v in ITERATIVE.items() if k != "recover"}, "name": "resume-lottery",
           "train": {"epochs": 3, "lr": 0.05},
           "prune": {"method": "lottery", "importance": "l1", "sparsity": 0.5, "steps": 1, "rewind": "iteration",
                     "rewind_step": 5}}
ADAMW_WARMUP = {**ITERATIVE, "name": "resume-adamw",  # warm-up: 1.2 of the 4 epochs
                "train": {"epochs": 4, "lr": 0.003, "optimizer": "adamw", "weight_decay": 0.05, "warmup": 0.3}}
UNTIMED = ("timings_s", "run_time_s", "threads", "checkpoint", "speedup")


def _write(tmp_path, recipe, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def _numbers(out: Path) -> dict:
    """report.json without what a resumed run may change: latency, timings, load."""
    rep = json.loads((out / "report.json").read_text())
    for side in ("dense", "pruned"):
        rep[side] = {k: v for k, v in rep[side].items() if not k.startswith("latency")}
    return {k: v for k, v in rep.items() if k not in UNTIMED}


def _state(tmp_path, out="out"):
    for p in tmp_path.glob(f".{out}.staging-*/.checkpoint/state.json"):
        try:
            return json.loads(p.read_text())
        except (json.JSONDecodeError, OSError):
            return None
    return None


def _kill_when(tmp_path, recipe, ready, out="out", extra=()):
    """Starts the run in a subprocess that stops itself right after its journal writes a state for which
    ``ready`` (an expression on ``s``, the state.json dict) holds, SIGKILLs it there; returns that state."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PRUNEKIT_TEST_STOP_AT": ready}
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "_stop_at.py"), "run", recipe, "--out", out,
                             "--no-progress", *extra], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    stopped = wait_stopped(proc.pid)
    assert stopped, f"the run ended before the kill point: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return _state(tmp_path, out)


def _cli(tmp_path, *args):
    """The CLI in a fresh interpreter, as a user runs it (a test worker's MKL may already run in another mode than
    the one prunekit's CLI sets before its first product, see prunekit.measure.threads)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "prunekit", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def _assert_resume_matches(tmp_path, recipe_dict, ready):
    recipe = _write(tmp_path, recipe_dict)
    _cli(tmp_path, "run", recipe, "--out", "whole", "--no-progress")
    killed_at = _kill_when(tmp_path, recipe, ready)
    assert not (tmp_path / "out").exists()
    _cli(tmp_path, "run", recipe, "--out", "out", "--no-progress", "--resume")
    assert _numbers(tmp_path / "out") == _numbers(tmp_path / "whole"), killed_at
    for name in ("model.safetensors", "pruned.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["checkpoint"]["resumed"] is True
    assert not list(tmp_path.glob(".out.*"))  # staging and checkpoint gone once the results are in place
    return killed_at


def test_killed_mid_fine_tuning_resumes_to_the_same_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    at = _assert_resume_matches(tmp_path, ITERATIVE, 'len(s["done"]) >= 2 and s["current"] is not None')
    assert len(at["done"]) >= 2  # the kill fell after the dense training and one pruning step


@pytest.mark.slow
@pytest.mark.parametrize("recipe,ready", [
    (ITERATIVE, 's["current"] is not None and len(s["done"]) == 0'),  # mid dense training
    (ITERATIVE, 'len(s["done"]) >= 3 and s["current"] is None'),  # between steps (pruning)
    (GRADUAL, 'len(s["done"]) == 1 and s["current"] is not None'),  # mid gradual fine-tuning, after an epoch
    (STRUCTURED, 's["current"] is not None and len(s["done"]) == 1'),  # mid recovery
    (SOFT_FILTER, 'len(s["done"]) == 1 and s["current"] is not None'),  # mid soft-filter training
    (LOTTERY, 's["current"] is not None and len(s["done"]) == 0'),  # mid dense training, after the rewind step
    (ADAMW_WARMUP, 's["current"] is not None and len(s["done"]) == 0'),  # after epoch 1, inside the warm-up
], ids=["dense", "between-steps", "gradual", "structured", "soft-filter", "lottery-rewind", "adamw-warmup"])
def test_killed_anywhere_resumes_to_the_same_report(tmp_path, monkeypatch, recipe, ready):
    monkeypatch.chdir(tmp_path)
    _assert_resume_matches(tmp_path, recipe, ready)  # phases with a per-step hook resume from their last epoch too


def test_resume_with_a_changed_recipe_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _kill_when(tmp_path, _write(tmp_path, ITERATIVE), 's["current"] is not None')
    changed = _write(tmp_path, {**ITERATIVE, "recover": {"epochs": 3, "lr": 0.02}}, "changed.yaml")
    assert main(["run", changed, "--out", "out", "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "differs from the one that wrote the checkpoint (run.recipe.recover.lr: 0.01 then, 0.02 now)" in err
    assert len(list(tmp_path.glob(".out.staging-*/.checkpoint/state.json"))) == 1  # kept for the right recipe
    assert main(["run", changed, "--out", "out", "--no-progress", "--force"]) == 0  # --force starts over
    assert "discarded the checkpoint" in capsys.readouterr().err
