"""Training on several processes (torchrun, gloo, loopback only): the same masks as one process, ranks that
disagree or die stop the job with an error, never a hang; two "nodes" on 127.0.0.1."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from torch import nn

from prunekit.cli.main import main
from prunekit.masks import MaskSet
from prunekit.training import distributed

REPO = Path(__file__).resolve().parents[1]
ITERATIVE = {
    "name": "ddp", "seed": 1, "model": "lenet300", "data": "digits",
    "train": {"epochs": 3, "lr": 0.05}, "recover": {"epochs": 2, "lr": 0.01},
    "prune": {"method": "iterative", "importance": "l1", "allocation": "global", "sparsity": 0.75, "steps": 2},
    "measure": {"latency_batches": [1], "latency_repeats": 1},
}


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PRUNEKIT_DIST_TIMEOUT": "30"}


def _write(tmp_path, recipe, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.mark.parametrize("n,world", [(64, 2), (7, 2), (1, 2), (10, 3)])
def test_ranks_share_each_global_batch_and_its_mean_loss(monkeypatch, n, world):
    x, y = torch.randn(n, 3), torch.randint(0, 4, (n,))
    w = torch.randn(3, 4)
    whole = F.cross_entropy(x @ w, y)
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    parts, total = [], 0.0
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        xr, yr, share = distributed.split_batch(x, y)
        if share:
            parts.append(xr)
        total += share * F.cross_entropy(xr @ w, yr) / world  # what DDP's average of the ranks' gradients is of
    assert sorted(torch.cat(parts).flatten().tolist()) == sorted(x.flatten().tolist())  # every sample once
    assert float(total) == pytest.approx(float(whole), rel=1e-6)


def test_the_hash_sees_masks_and_architecture():
    torch.manual_seed(0)
    a, b = nn.Sequential(nn.Linear(4, 3)), nn.Sequential(nn.Linear(4, 3))
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        MaskSet(m).set("0.weight", torch.ones(3, 4))
    assert distributed.state_digest(a) == distributed.state_digest(b)
    with torch.no_grad():
        b[0].weight_mask[0, 0] = 0
    assert distributed.state_digest(a) != distributed.state_digest(b)
    assert distributed.state_digest(nn.Sequential(nn.Linear(4, 2))) != distributed.state_digest(a)


def test_nproc_beyond_the_cpus_is_refused(tmp_path, capsys):
    assert main(["run", _write(tmp_path, ITERATIVE), "--out", str(tmp_path / "o"), "--nproc", "64"]) == 2
    err = capsys.readouterr().err
    assert "--nproc 64: this machine has" in err and "choose --nproc between 1 and" in err


MISMATCH = """
import sys, torch
from torch import nn
from prunekit.masks import MaskSet
from prunekit.training import distributed
distributed.init_from_env()
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 3))
mask = torch.ones(3, 4)
mask[0, distributed.rank()] = 0  # each rank pruned another weight
MaskSet(model).set("0.weight", mask)
try:
    distributed.check_same(model, "before fine-tuning")
except distributed.DistributedMismatchError as e:
    print(f"rank {distributed.rank()}: {e}", flush=True)
    sys.exit(3)
"""


@pytest.mark.slow
def test_ranks_with_different_masks_stop_with_an_error(tmp_path):
    script = tmp_path / "mismatch.py"
    script.write_text(MISMATCH)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script)], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "rank 0: before fine-tuning: rank(s) [1] hold other masks or another architecture" in proc.stdout


@pytest.mark.slow
def test_two_processes_give_the_masks_of_one(tmp_path):
    recipe = _write(tmp_path, ITERATIVE)
    assert main(["run", recipe, "--out", str(tmp_path / "one"), "--no-progress", "--threads", "1"]) == 0
    proc = subprocess.run([sys.executable, "-m", "prunekit", "run", recipe, "--out", "two", "--no-progress",
                           "--nproc", "2"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    one, two = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    assert two["distributed"]["world_size"] == 2 and two["threads"]["source"] in ("torchrun", "OMP_NUM_THREADS")
    w1, w2 = (load_file(tmp_path / d / "model.safetensors") for d in ("one", "two"))
    for name in w1:
        assert torch.equal(w1[name] != 0, w2[name] != 0), name  # the same masks
        assert torch.allclose(w1[name], w2[name], atol=1e-5), name  # weights up to summation order
    assert abs(one["pruned"]["accuracy"] - two["pruned"]["accuracy"]) <= 0.01
    assert [s["sparsity"] for s in one["steps"]] == [s["sparsity"] for s in two["steps"]]


def _workers(launcher_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(launcher_pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_job_non_zero_within_60_s(tmp_path):
    recipe = _write(tmp_path, {**ITERATIVE, "train": {"epochs": 200, "lr": 0.05}})
    proc = subprocess.Popen([sys.executable, "-m", "prunekit", "run", recipe, "--out", "out", "--no-progress",
                             "--nproc", "2"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("training")  # the ranks are training
    victim = max(_workers(proc.pid))
    os.kill(victim, signal.SIGKILL)
    t = time.time()
    _, err = proc.communicate(timeout=90)
    assert time.time() - t < 60
    assert proc.returncode != 0
    assert "was killed by SIGKILL" in err and "the other ranks were stopped" in err, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_loopback(tmp_path):
    recipe = _write(tmp_path, ITERATIVE)
    port = _free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=pk-test", "--max-restarts=0"]
    nodes = [subprocess.Popen([*cmd, "-m", "prunekit", "run", recipe, "--out", f"out{i}", "--no-progress"],
                              cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], results
    written = [d for d in ("out0", "out1") if (tmp_path / d / "report.json").is_file()]
    assert len(written) == 1  # rank 0 alone writes (whichever launcher got it)
    report = json.loads((tmp_path / written[0] / "report.json").read_text())
    assert report["distributed"]["world_size"] == 2 and report["sparsity"] == pytest.approx(0.75, abs=1e-3)


AGREE = """
import json, sys, torch
from torch import nn
import prunekit as pk
from prunekit.training import distributed

distributed.init_from_env()
shared = sys.argv[1] == "agree"


def kept_rows(before, after):  # which of the first layer's original units survived
    return [i for i, row in enumerate(before) if any(torch.equal(row, r) for r in after)]


out = {}
for kind in ("masks", "units"):
    torch.manual_seed(distributed.rank())  # each rank its own weights, so its own scores
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    w = net[0].weight.detach().clone()
    x = torch.randn(4, 8)
    if shared:
        with distributed.decisions_from_rank0():
            r = pk.prune_(net, pk.UnstructuredConfig(sparsity=0.5, importance="l1") if kind == "masks"
                          else pk.StructuredConfig(sparsity=0.5, importance="l1"), example_inputs=x)
    else:
        r = pk.prune_(net, pk.UnstructuredConfig(sparsity=0.5, importance="l1") if kind == "masks"
                      else pk.StructuredConfig(sparsity=0.5, importance="l1"), example_inputs=x)
    mine = ({n: m.flatten().tolist() for n, m in r.masks.items()} if kind == "masks"
            else kept_rows(w, net[0].weight.detach()))
    out[kind] = distributed.gather_object(mine)
if distributed.rank() == 0:
    print(json.dumps(out), flush=True)
distributed.shutdown()
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["agree", "alone"])
def test_pruning_decisions_are_rank_0s_on_every_rank(tmp_path, mode):
    script = tmp_path / "agree.py"
    script.write_text(AGREE)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), mode], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind in ("masks", "units"):
        rank0, rank1 = got[kind]
        assert (rank0 == rank1) is (mode == "agree"), kind  # the check can fail: alone, the ranks' scores differ
