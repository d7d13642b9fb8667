"""Measurement against hand-computed examples."""

import pytest
import torch
from torch import nn

from prunekit.measure import compare_latency, count_macs, count_params, global_sparsity, layer_sparsity, measure_latency
from prunekit.measure.size import size_on_disk, sparse_decode, sparse_encode


def test_count_params_and_sparsity_by_hand():
    lin = nn.Linear(4, 3)  # 12 weights + 3 biases
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1., 0, 0, 2], [0, 0, 0, 0], [3, 0, 4, 0]]))
        lin.bias.copy_(torch.tensor([1., 0, 2]))
    c = count_params(lin)
    assert (c.total, c.nonzero) == (15, 6)
    assert c.compression == pytest.approx(15 / 6)
    assert layer_sparsity(lin) == {"weight": pytest.approx(1 - 4 / 12)}
    assert global_sparsity(lin) == pytest.approx(8 / 12)


def test_tied_parameters_counted_once():
    a = nn.Linear(3, 3, bias=False)
    model = nn.Sequential(a, a)
    assert count_params(model).total == 9


def test_macs_linear_and_conv_by_hand():
    # Linear 10→5 on batch 1: 50 MACs. Conv 3→4, 3×3, on 8×8 with padding 1: 4·3·9·64 = 6912.
    lin = nn.Linear(10, 5)
    assert count_macs(lin, torch.randn(1, 10)).dense == 50
    conv = nn.Conv2d(3, 4, 3, padding=1)
    assert count_macs(conv, torch.randn(1, 3, 8, 8)).dense == 6912


def test_nonzero_macs_skip_zero_weights():
    conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # one weight left, used at each of 5·5 positions
    m = count_macs(conv, torch.randn(1, 2, 5, 5))
    assert m.dense == 2 * 2 * 9 * 25
    assert m.nonzero == 25
    lin = nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight[:2] = 0  # 8 of 16 weights zero; 3 tokens
    m = count_macs(lin, torch.randn(1, 3, 4))
    assert (m.dense, m.nonzero) == (48, 24)


def test_macs_see_functional_matmuls():
    class Attn(nn.Module):
        def forward(self, q):
            return q @ q.transpose(-1, -2)

    # (1, 6, 4) @ (1, 4, 6): 6·6·4 = 144 MACs
    assert count_macs(Attn(), torch.randn(1, 6, 4)).dense == 144


def test_macs_see_multihead_attention_in_eval():
    """nn.MultiheadAttention's fused eval kernel is invisible to the flop counter; it must not be used."""
    mha, x = nn.MultiheadAttention(16, 4, batch_first=True).eval(), torch.randn(1, 5, 16)
    # projections alone: 5 tokens x 16 inputs x (48 q/k/v + 16 out) = 5120; then q·k and weights·v, 4·5·5·4 each
    assert count_macs(mha, x, x, x).dense == 5120 + 2 * 400
    assert torch.backends.mha.get_fastpath_enabled()


def test_sparse_encoding_round_trips_and_shrinks():
    w = torch.randn(64, 64)
    w[torch.rand_like(w) < 0.9] = 0
    state = {"w": w, "b": torch.randn(3), "n": torch.tensor(7), "s": torch.tensor(2.5)}
    back = sparse_decode(sparse_encode(state))
    assert set(back) == set(state)
    for k in state:
        assert torch.equal(back[k], state[k]), k
    model = nn.Linear(256, 256)
    dense = size_on_disk(model)
    with torch.no_grad():
        model.weight[torch.rand_like(model.weight) < 0.95] = 0
    sparse = size_on_disk(model)
    assert sparse.dense_bytes == dense.dense_bytes  # same tensors, same dense file
    assert sparse.compressed_bytes < dense.dense_bytes / 4


def test_latency_statistics_of_known_run_times(monkeypatch):
    """A fake clock that each timed forward advances by a known time: the figures are exact, not just ordered.
    Every timed forward follows an untimed one (weights in cache), which the clock does not see."""
    import time

    durations_ms = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0]  # sorted: 1 1 2 3 3 4 5 5 6 9
    clock = {"now": 100.0, "runs": 0}

    class Clocked(nn.Linear):
        def forward(self, x):
            if clock["runs"] % 2:  # odd calls are the timed ones
                clock["now"] += durations_ms[clock["runs"] // 2] / 1e3
            clock["runs"] += 1
            return super().forward(x)

    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    lat = measure_latency(Clocked(8, 8), torch.randn(1, 8), batch=4, warmup=0, repeats=10)
    assert lat.batch == 4 and lat.repeats == 10 and lat.threads == torch.get_num_threads() and clock["runs"] == 20
    assert lat.min_ms == pytest.approx(1.0) and lat.median_ms == pytest.approx(3.5)
    # deciles by the exclusive method: p10 at rank 1.1 (1 + 0.1 * 0), p90 at rank 9.9 (6 + 0.9 * 3)
    assert lat.p10_ms == pytest.approx(1.0) and lat.p90_ms == pytest.approx(8.7)


def test_latency_refuses_an_empty_batch():
    with pytest.raises(ValueError, match=r"batch and repeats must be ≥ 1, got batch=0"):
        measure_latency(nn.Linear(8, 8), torch.randn(1, 8), batch=0)


def test_compare_latency_alternates_models_on_the_same_batch():
    calls = []

    class Tagged(nn.Module):
        def __init__(self, tag):
            super().__init__()
            self.tag, self.fc = tag, nn.Linear(8, 8)

        def forward(self, x):
            calls.append((self.tag, x.shape[0]))
            return self.fc(x)

    small, big = Tagged("a").train(), Tagged("b")
    lat = compare_latency([small, big], torch.randn(3, 8), batch=4, warmup=1, repeats=3)
    assert [t.repeats for t in lat] == [3, 3] and all(t.batch == 4 for t in lat)
    # warm-up, then turns that alternate; in each turn a model runs twice: untimed (weights into cache), timed
    assert [c[0] for c in calls] == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert all(n == 4 for _, n in calls) and small.training  # modes restored
