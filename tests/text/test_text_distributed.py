"""Text training phases (fine-tuning, encoder distillation) on several processes and across a kill: two ranks
give the architecture and weights of one (up to summation order), and a run killed mid-distillation continues
with --resume to the report and files of a run never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prunekit.training import distributed
from tests._stop_at import wait_stopped

REPO = Path(__file__).resolve().parents[2]
UNTIMED = ("timings_s", "run_time_s", "threads", "checkpoint", "speedup", "speedup_cpu", "distributed", "seconds")


def _recipe(model, data, tmp_path, **over):
    raw = {"version": 2, "name": "tiny-text-ddp", "seed": 2, "data": f"text:{data}", "model": f"hf:{model}",
           "train": {"epochs": 2, "lr": 0.003, "optimizer": "adam", "batch_size": 16, "weight_decay": 0.0},
           "prune": {"method": "transformer", "sparsity": 0.5},
           "recover": {"method": "distill", "epochs": 3, "lr": 0.001, "optimizer": "adam", "batch_size": 16,
                       "weight_decay": 0.0, "distill": {"alpha": 0.5, "embedding_weight": 1.0}},
           "measure": {"latency_batches": [1], "latency_repeats": 1},
           "text": {"max_length": 16, "latency_sequence": 16}, **over}
    path = tmp_path / "text.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PRUNEKIT_DIST_TIMEOUT": "60", **extra}


def _cli(tmp_path, *args):
    proc = subprocess.run([sys.executable, "-m", "prunekit", *args, "--no-progress"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / args[args.index("--out") + 1] / "report.json").read_text())


def _numbers(rep: dict) -> dict:
    """The report without what differs run to run (latency, timings, load)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not k.startswith("latency") and k not in UNTIMED}
        return x

    return strip(rep)


@pytest.fixture(scope="module")
def still_bert(tiny_bert, tmp_path_factory):
    """The tiny BERT without dropout: two processes then compute what one does, up to summation order."""
    import shutil

    d = tmp_path_factory.mktemp("still") / "bert"
    shutil.copytree(tiny_bert, d)
    config = json.loads((d / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (d / "config.json").write_text(json.dumps(config))
    return d


@pytest.mark.parametrize("n,world", [(16, 2), (5, 2), (1, 2), (10, 3)])
def test_ranks_share_each_text_batch_once(monkeypatch, n, world):
    batch = list(range(100, 100 + n))
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    seen, total = [], 0.0
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        idx, share = distributed.split_indices(batch)
        if share:
            seen += idx
        total += share * sum(idx) / len(idx) / world  # DDP's mean over ranks of share x this rank's mean loss
    assert sorted(seen) == batch  # every text of the batch once
    assert total == pytest.approx(sum(batch) / n)  # the whole batch's mean


@pytest.mark.slow
def test_a_text_recipe_on_two_processes_gives_the_architecture_of_one(still_bert, reviews_csv, tmp_path):
    """The weights of each text loop are compared in tests/test_distributed_phases.py; here the whole recipe: the
    dense model's figures agree to rounding. (Which heads go may differ: this tiny BERT's head scores are so close
    that noise of 1e-6 on the weights changes the choice.)"""
    recipe = _recipe(still_bert, reviews_csv, tmp_path)
    one = _cli(tmp_path, "run", recipe, "--out", "one", "--threads", "1")
    two = _cli(tmp_path, "run", recipe, "--out", "two", "--nproc", "2")
    assert two["distributed"]["world_size"] == 2 and one["distributed"] is None
    assert two["pruned"]["layers"] == one["pruned"]["layers"]  # the same architecture (heads, FFN per layer)
    assert two["dense"]["loss"] == pytest.approx(one["dense"]["loss"], rel=1e-5)  # fine-tuned alike
    assert two["dense"]["accuracy"] == one["dense"]["accuracy"]
    assert two["pruned"]["accuracy"] == pytest.approx(one["pruned"]["accuracy"], abs=0.05)


@pytest.mark.slow
def test_text_run_killed_mid_distillation_resumes_to_the_same_report(tiny_bert, reviews_csv, tmp_path):
    recipe = _recipe(tiny_bert, reviews_csv, tmp_path)  # with dropout: the RNG state must come back too
    whole = _cli(tmp_path, "run", recipe, "--out", "whole")
    stop_at = 's["current"] is not None and len(s["done"]) == 1'  # distillation (phase 2) after its first epoch
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "_stop_at.py"), "run", recipe, "--out", "out",
                             "--no-progress"], cwd=tmp_path, env=_env(PRUNEKIT_TEST_STOP_AT=stop_at),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_stopped(proc.pid), proc.communicate()[1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    resumed = _cli(tmp_path, "run", recipe, "--out", "out", "--resume")
    assert resumed["checkpoint"]["resumed"] is True
    assert _numbers(resumed) == _numbers(whole)
    for f in ("model/model.safetensors", "head.safetensors"):
        assert (tmp_path / "out" / f).read_bytes() == (tmp_path / "whole" / f).read_bytes(), f
