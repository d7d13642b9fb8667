"""A latency-cost allocation chooses the same channels on a busy machine as on a quiet one.

The latency table ranks by single-thread CPU time per forward (``clock="cpu"``), which the other
runnable processes do not add to; wall time grows with them (bench/results/clock_stability.md).
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch

from prunekit.allocation import AllocationConfig, Budget, CostModel, allocate, measure_latency_table
from prunekit.graph import DependencyGraph
from prunekit.sensitivity import Curve, Sensitivity

pytestmark = pytest.mark.usefixtures("one_thread")

# The four 16-channel groups of resnet_mini: with min_channels = round_to = 8 each has one step (8 of 16),
# so the allocation is which of them to halve. Excluding these modules leaves no other group prunable.
GROUPS = ("stem.0", "layers.0.conv1", "layers.1.conv1", "layers.2.conv1")
OTHERS = ("layers.3.conv2", "layers.4.conv1", "layers.5.conv1", "layers.6.conv1",
          "layers.6.conv2", "layers.7.conv1", "layers.8.conv1")


@contextmanager
def busy_loops(n: int):
    """``n`` pure-Python busy loops beside the block (each keeps a core runnable)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.slow  # ~10-40 s: two tables of 7 models at batch 128, the second beside two busy loops
# timing: it compares measured tables, so it needs a machine without other test workers (make test-timing);
# under CI's `-n 2` the second worker is load too and close steps swapped once (layers.0 vs layers.1).
@pytest.mark.timing
def test_a_cpu_time_table_allocates_the_same_channels_beside_busy_loops(net, digits):
    graph = DependencyGraph.build(net, digits.x_train[:1], exclude=OTHERS)
    assert {g.name for g in graph.prunable_groups()} == set(GROUPS)
    cfg = AllocationConfig("sensitivity", min_channels=8, round_to=8, cost="latency")
    steps = {g: [0, 8] for g in GROUPS}
    quiet = measure_latency_table(graph, steps, batch=128, repeats=5)
    with busy_loops(2):
        busy = measure_latency_table(graph, steps, batch=128, repeats=5)
    assert (quiet.clock, busy.clock, quiet.threads) == ("cpu", "cpu", 1)
    # Loss rises that make the ranking (rise per ms saved) 3× apart from group to group by the quiet table:
    # halving group k costs 3^k × its quiet saving. The first two groups in that order meet the budget.
    saved = {g: max(quiet.saved(g, 0, 8), 0.01 * quiet.dense_ms) for g in GROUPS}  # the greedy's floor
    rise = {g: 3.0 ** k * saved[g] / saved[GROUPS[0]] for k, g in enumerate(GROUPS)}
    ratios = [0.25, 0.5, 0.75]
    sens = Sensitivity("l2", 0.9, 1.0, {g.name: Curve(g.name, g.size, ratios, [0.9] * 3,
                                                        [1.0 + 2 * rise[g.name] * r for r in ratios])
                                        for g in graph.prunable_groups()})
    cost = CostModel.build(graph)
    target = cost.macs({GROUPS[0]: 8, GROUPS[1]: 8}) / cost.dense_macs
    chosen = {name: allocate(graph, Budget(macs_kept=target, tolerance=0.005), cfg, "l2", sensitivity=sens,
                             latency_table=table).to_dict()["removed"]
              for name, table in (("quiet", quiet), ("busy", busy))}
    assert chosen["quiet"] == {GROUPS[0]: 8, GROUPS[1]: 8}, quiet.to_dict()["measured"]  # the construction works
    assert chosen["busy"] == chosen["quiet"], (quiet.to_dict()["measured"], busy.to_dict()["measured"])
    torch.testing.assert_close(busy.dense_ms, quiet.dense_ms, rtol=0.5, atol=0)  # CPU time: not ×(load)
