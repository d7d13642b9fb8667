"""The compressed sparse int8 file: positions exact, values within half a quantisation step, small, refused cleanly
when it exists or is not such a file; and the side-by-side timer of the deploy table."""

from __future__ import annotations

import lzma

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError, ModelLoadError, OutputExistsError
from prunekit.export import load_sparse_int8, save_sparse_int8, time_runners
from prunekit.export.onnx_export import plain_copy
from prunekit.export.sparse_int8 import MAGIC, varint_decode, varint_encode
from prunekit.measure.size import dense_bytes
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner

pytestmark = pytest.mark.usefixtures("one_thread")


def _pruned(sparsity=0.95):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                          nn.Linear(100, 10), nn.BatchNorm1d(10))
    UnstructuredPruner(model, UnstructuredConfig(allocation="global")).prune_to(sparsity)
    return plain_copy(model, fold_bn=False)


def test_varints_round_trip_at_every_length():
    values = np.array([0, 1, 127, 128, 255, 16383, 16384, 2**21, 2**35 + 7, 2**62], dtype=np.uint64)
    enc = varint_encode(values)
    assert len(enc) == 1 + 1 + 1 + 2 + 2 + 2 + 3 + 4 + 6 + 9
    assert (varint_decode(enc) == values).all() and len(varint_encode(np.zeros(0))) == 0
    with pytest.raises(ModelLoadError, match="runs past the end"):
        varint_decode(enc[:-1])


def test_round_trip_keeps_every_position_and_quantises_each_row(tmp_path):
    model = _pruned()
    info = save_sparse_int8(model, tmp_path / "m.xz")
    state, back = model.state_dict(), load_sparse_int8(tmp_path / "m.xz")
    assert list(back) == list(state) and info["size_bytes"] == (tmp_path / "m.xz").stat().st_size
    for name, t in state.items():
        got = back[name]
        assert got.shape == t.shape and got.dtype == t.dtype, name
        if t.dim() >= 2:  # int8 weights: the same zeros, each value within half a step of its row's scale
            assert torch.equal(got != 0, t != 0), name
            step = t.abs().amax(dim=1, keepdim=True) / 127
            assert ((got - t).abs() <= step * 0.5 + 1e-3 * step + 1e-12).all(), name
        else:  # biases, BatchNorm statistics and counters: exact
            assert torch.equal(got, t), name
    assert info["nonzero"] == sum(int(t.count_nonzero()) for t in state.values() if t.is_floating_point())
    # ~1 byte of position + 1 byte of value per non-zero weight, then LZMA: far below fp32 safetensors
    assert info["size_bytes"] * 25 < len(dense_bytes(state))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.xz"]  # no temporary left


def test_a_dense_tensor_is_stored_dense_and_still_exact_in_its_zeros(tmp_path):
    lin = nn.Linear(16, 8)
    save_sparse_int8(lin, tmp_path / "d.xz")
    w = load_sparse_int8(tmp_path / "d.xz")["weight"]
    assert torch.allclose(w, lin.weight, atol=float(lin.weight.detach().abs().max()) / 254 + 1e-6)


def test_bad_input_is_refused_in_one_line_and_writes_nothing(tmp_path):
    model = _pruned()
    (tmp_path / "m.xz").write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="force=True"):
        save_sparse_int8(model, tmp_path / "m.xz")
    assert (tmp_path / "m.xz").read_bytes() == b"mine"
    masked = nn.Sequential(nn.Linear(8, 4))
    UnstructuredPruner(masked, UnstructuredConfig()).prune_to(0.5)
    with pytest.raises(ConfigError, match="fold the masks in first"):
        save_sparse_int8(masked, tmp_path / "masked.xz")
    with pytest.raises(ModelLoadError, match="not a prunekit sparse int8 file"):
        load_sparse_int8(tmp_path / "m.xz")
    header = (b'{"version":1,"tensors":[{"name":"w","shape":[4],"dtype":"float32","kind":"fp32_dense",'
              b'"values":[0,400,"<f4"]}]}')
    (tmp_path / "bad.xz").write_bytes(MAGIC + lzma.compress(len(header).to_bytes(4, "little") + header))
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_sparse_int8(tmp_path / "bad.xz")
    with pytest.raises(ModelLoadError, match="no sparse int8 file"):
        load_sparse_int8(tmp_path / "absent.xz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.xz", "m.xz"]


def test_runners_are_timed_in_turn_with_wall_and_cpu_time():
    calls = []
    a = nn.Linear(256, 256)
    x = torch.randn(64, 256)
    times = time_runners({"a": lambda: (calls.append("a"), a(x)), "b": lambda: calls.append("b")}, batch=64,
                         threads=1, warmup=1, repeats=5)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 5  # a warm-up round, then alternating (untimed, timed)
    assert set(times) == {"a", "b"} and times["a"].repeats == 5 and times["a"].batch == 64
    assert times["a"].cpu_ms > 0 and times["a"].median_ms > times["b"].median_ms
    with pytest.raises(ConfigError, match="nothing to time"):
        time_runners({}, batch=1, threads=1)
