"""ONNX export: every export verified in ONNX Runtime (CNNs masked and physically pruned, a transformer
encoder), a mismatch refused with nothing left behind, int8 accuracy measured, the extra named when missing."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError, ExportError, MissingDependencyError, OutputExistsError
from prunekit.export import (
    compare_onnx_latency,
    deploy_onnx,
    evaluate_onnx,
    export_onnx,
    onnx_export,
    onnx_runtime,
    quantize_onnx,
)
from prunekit.graph import DependencyGraph
from prunekit.models import build_model
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
from prunekit.structured import prune_groups
from prunekit.training import TrainConfig, evaluate, train

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.usefixtures("one_thread")


def _ort_outputs(path, x):
    return torch.from_numpy(onnx_runtime.run_session(onnx_runtime.ort_session(path), x)[0])


def _trained(digits, name="lenet300", epochs=3):
    torch.manual_seed(0)
    model = build_model(name, digits.input_shape, digits.num_classes)
    train(model, digits, TrainConfig(epochs=epochs), seed=0, progress=False)
    return model.eval()


def test_lenet300_export_is_verified_at_another_batch_size(digits, tmp_path):
    model = build_model("lenet300", digits.input_shape, digits.num_classes).eval()
    res = export_onnx(model, digits.x_test[:4], tmp_path / "m.onnx", exporter="torchscript")
    assert res.exporter == "torchscript" and res.check_batches == (7,) and isinstance(res.opset, int)
    assert 0 <= res.max_rel <= 1e-4 and [o.name for o in res.outputs] == ["output"]
    x = digits.x_test[:33]  # a third batch size: the axis is really dynamic
    assert (_ort_outputs(res.path, x) - model(x)).abs().max().item() <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary left


def test_physically_pruned_resnet_exports_and_matches(net, digits, tmp_path):
    graph = DependencyGraph.build(net, digits.x_test[:1])
    prune_groups(graph, {g.name: list(range(g.size // 2)) for g in graph.prunable_groups()})
    for m in net.modules():  # non-trivial BatchNorm statistics, so folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    res = export_onnx(net, digits.x_test[:8], tmp_path / "r.onnx", exporter="torchscript")
    assert res.fold_bn and res.max_rel <= 1e-4
    proto = onnx.load(res.path)
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    convs = [i for i in proto.graph.initializer if len(i.dims) == 4]
    assert max(i.dims[0] for i in convs) == 32  # 64 channels halved: the smaller model was exported
    x = digits.x_test[:5]
    assert (_ort_outputs(res.path, x) - net(x)).abs().max().item() <= 1e-4


@pytest.mark.slow  # torch.export + onnxscript take ~10 s to warm up on a shared 2-core box
def test_the_default_dynamo_exporter_is_verified_too(digits, tmp_path):
    pytest.importorskip("onnxscript")
    model = build_model("lenet300", digits.input_shape, digits.num_classes).eval()
    res = export_onnx(model, digits.x_test[:1], tmp_path / "m.onnx")  # batch 1 is widened to 2 for torch.export
    assert res.exporter == "dynamo" and res.attempts == () and res.check_batches == (5,) and res.max_rel <= 1e-4
    assert (_ort_outputs(res.path, digits.x_test[:17]) - model(digits.x_test[:17])).abs().max().item() <= 1e-5


def test_masked_model_exports_its_zeros_and_not_its_hooks(digits, tmp_path):
    model = build_model("lenet300", digits.input_shape, digits.num_classes)
    UnstructuredPruner(model, UnstructuredConfig(allocation="uniform")).prune_to(0.9)
    model.eval()
    res = export_onnx(model, digits.x_test[:4], tmp_path / "m.onnx", exporter="torchscript")
    weights = [onnx.numpy_helper.to_array(i) for i in onnx.load(res.path).graph.initializer if len(i.dims) == 2]
    assert len(weights) == 3 and all((w == 0).mean() == pytest.approx(0.9, abs=1e-3) for w in weights)
    assert not any("mask" in i.name for i in onnx.load(res.path).graph.initializer)
    assert (_ort_outputs(res.path, digits.x_test[:9]) - model(digits.x_test[:9])).abs().max().item() <= 1e-5
    assert hasattr(model[1], "weight_mask")  # the user's model keeps its masks


def test_transformer_encoder_exports_and_matches(tmp_path):
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    res = export_onnx(enc, torch.randn(3, 10, 32), tmp_path / "enc.onnx", exporter="torchscript")
    assert res.max_rel <= 1e-4
    x = torch.randn(6, 10, 32)
    with torch.no_grad():
        assert (_ort_outputs(res.path, x) - enc(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("exporter", ["torchscript", "auto"])
def test_a_mismatching_export_is_refused_and_leaves_nothing(digits, tmp_path, monkeypatch, exporter):
    if exporter == "auto":  # dynamo is slow to load; both exporters fail the same check either way
        monkeypatch.setattr(onnx_export, "AUTO_ORDER", ("torchscript", "torchscript"))
    real = onnx_export.run_session
    monkeypatch.setattr(onnx_export, "run_session", lambda s, x: [o + 0.1 for o in real(s, x)])
    model = build_model("lenet300", digits.input_shape, digits.num_classes).eval()
    with pytest.raises(ExportError, match="output 'output' max_rel .* > rtol"):
        export_onnx(model, digits.x_test[:4], tmp_path / "out" / "m.onnx", exporter=exporter)
    assert list((tmp_path / "out").iterdir()) == []


class _Svd(nn.Module):
    def forward(self, x):
        return torch.linalg.svdvals(x.reshape(x.shape[0], 2, 2))


def test_an_op_the_exporter_cannot_handle_is_named_with_the_fix_and_leaves_nothing(tmp_path):
    with pytest.raises(ExportError, match=r"'aten::linalg_svdvals'.*not supported.*fix: write that op") as err:
        export_onnx(_Svd(), torch.randn(3, 4), tmp_path / "out" / "m.onnx", exporter="torchscript")
    assert len(str(err.value).splitlines()) == 1 and list((tmp_path / "out").iterdir()) == []


def test_an_op_onnx_runtime_cannot_load_is_refused(tmp_path, monkeypatch):
    def no_kernel(path, threads=1):
        raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for Foo(1)")

    monkeypatch.setattr(onnx_export, "ort_session", no_kernel)
    with pytest.raises(ExportError, match=r"ONNX Runtime cannot load .*implementation for Foo\(1\).*fix: try"):
        export_onnx(nn.Linear(4, 3), torch.randn(3, 4), tmp_path / "out" / "m.onnx", exporter="torchscript")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_existing_file_is_refused_unless_forced(digits, tmp_path):
    model = build_model("lenet300", digits.input_shape, digits.num_classes).eval()
    target = tmp_path / "m.onnx"
    target.write_text("keep me")
    with pytest.raises(OutputExistsError, match="force=True"):
        export_onnx(model, digits.x_test[:4], target, exporter="torchscript")
    assert target.read_text() == "keep me"
    export_onnx(model, digits.x_test[:4], target, exporter="torchscript", force=True)
    assert onnx.load(str(target)).graph.node


def test_int8_static_and_dynamic_accuracy_is_measured_in_onnx_runtime(digits, tmp_path):
    model = _trained(digits)
    torch_acc = evaluate(model, digits.x_test, digits.y_test).accuracy
    fp32 = export_onnx(model, digits.x_test[:4], tmp_path / "m.onnx", exporter="torchscript")
    fp32_acc = evaluate_onnx(fp32.path, digits)
    assert fp32_acc.n == len(digits.y_test) and abs(fp32_acc.accuracy - torch_acc) <= 1 / fp32_acc.n
    static = quantize_onnx(fp32.path, tmp_path / "s.onnx", "static", calibration=digits, max_samples=256)
    dynamic = quantize_onnx(fp32.path, tmp_path / "d.onnx", "dynamic")
    assert static.per_channel and static.calibration_samples == 256 and not dynamic.per_channel
    for q in (static, dynamic):
        proto = onnx.load(q.path)
        assert any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger") for n in proto.graph.node)
        assert q.size_bytes < 0.4 * q.fp32_size_bytes  # int8 weights: about a quarter of fp32
        acc = evaluate_onnx(q.path, (digits.x_test, digits.y_test)).accuracy
        assert torch_acc > 0.8 and abs(acc - torch_acc) <= 0.05, (q.mode, acc, torch_acc)
    fp, i8 = compare_onnx_latency([fp32.path, static.path], digits.x_test[:1], batch=4, repeats=5)
    assert fp.batch == i8.batch == 4 and fp.threads == 1 and fp.repeats == i8.repeats == 5


def test_static_int8_keeps_a_one_channel_stem_conv_in_fp32(net, digits, tmp_path):
    fp32 = export_onnx(net, digits.x_test[:4], tmp_path / "m.onnx", exporter="torchscript")
    auto = quantize_onnx(fp32.path, tmp_path / "a.onnx", "static", calibration=digits, max_samples=64)
    full = quantize_onnx(fp32.path, tmp_path / "f.onnx", "static", calibration=digits, max_samples=64, keep_fp32=())
    assert len(auto.kept_fp32) == 1 and full.kept_fp32 == ()
    graph = onnx.load(auto.path).graph
    stem = next(n for n in graph.node if n.name == auto.kept_fp32[0])
    assert stem.op_type == "Conv" and stem.input[0] == graph.input[0].name  # fp32 input, not a DequantizeLinear
    weights = {t.name: t for t in graph.initializer}
    assert weights[stem.input[1]].data_type == onnx.TensorProto.FLOAT and list(weights[stem.input[1]].dims)[1] == 1
    full_graph = onnx.load(full.path).graph
    assert all(n.input[0] != full_graph.input[0].name for n in full_graph.node if n.op_type == "Conv")
    x = digits.x_test[:64]
    ref = net(x)
    for q in (auto, full):  # both int8 models still compute the network (random weights: compare to fp32)
        assert (_ort_outputs(q.path, x) - ref).abs().max() <= 0.1 * ref.abs().max()
    with pytest.raises(ConfigError, match="does not have"):
        quantize_onnx(fp32.path, tmp_path / "x.onnx", "static", calibration=digits, keep_fp32=["no_such_node"])
    with pytest.raises(ConfigError, match="'auto' or a list"):
        quantize_onnx(fp32.path, tmp_path / "x.onnx", "static", calibration=digits, keep_fp32="all")


def test_deploy_reports_the_pruned_int8_model_beside_the_dense_one(digits, tmp_path):
    dense = _trained(digits)
    pruned = copy.deepcopy(dense)
    UnstructuredPruner(pruned, UnstructuredConfig()).prune_to(0.8)
    rep = deploy_onnx(pruned, dense, digits, tmp_path / "deploy", int8="static", batches=(1, 16), repeats=3,
                      relative_to=tmp_path)
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == ["dense.onnx", "model.int8.onnx", "model.onnx"]
    for key in ("deployed", "dense_deployed", "pruned_fp32"):
        entry = rep[key]
        assert {"accuracy", "latency_ms", "size_bytes", "backend", "path", "cpu_ms", "zipped_bytes"} <= set(entry)
        assert set(entry["latency_ms"]) == {"1", "16"} and all(v > 0 for v in entry["latency_ms"].values())
        assert (tmp_path / entry["path"]).stat().st_size == entry["size_bytes"]
    assert rep["deployed"]["path"] == "deploy/model.int8.onnx" and "int8 static" in rep["deployed"]["backend"]
    dense_acc = evaluate(dense, digits.x_test, digits.y_test).accuracy
    assert abs(rep["dense_deployed"]["accuracy"] - dense_acc) <= 1 / len(digits.y_test)
    assert rep["deployed"]["accuracy"] > 0.8 and rep["exports"]["pruned"]["max_rel"] <= 1e-4
    assert rep["deployed"]["size_bytes"] < 0.4 * rep["dense_deployed"]["size_bytes"]
    with pytest.raises(OutputExistsError, match="force"):
        deploy_onnx(pruned, dense, digits, tmp_path / "deploy", int8="static")


def test_static_int8_without_calibration_data_is_refused(digits, tmp_path):
    model = build_model("lenet300", digits.input_shape, digits.num_classes).eval()
    fp32 = export_onnx(model, digits.x_test[:4], tmp_path / "m.onnx", exporter="torchscript")
    with pytest.raises(ConfigError, match="calibration") as err:
        quantize_onnx(fp32.path, tmp_path / "s.onnx", "static")
    assert "dynamic" in str(err.value) and not (tmp_path / "s.onnx").exists()
    with pytest.raises(ConfigError, match="unknown int8 quantisation mode 'int4'"):
        quantize_onnx(fp32.path, tmp_path / "s.onnx", "int4")


def test_missing_deploy_extra_is_named(monkeypatch, tmp_path):
    real = onnx_runtime.importlib.import_module

    def no_onnx(name, *a):
        if name.split(".")[0] in ("onnx", "onnxruntime", "onnxscript"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a)

    monkeypatch.setattr(onnx_runtime.importlib, "import_module", no_onnx)
    with pytest.raises(MissingDependencyError, match=r"pip install 'prunekit\[deploy\]'"):
        export_onnx(nn.Linear(3, 2), torch.randn(2, 3), tmp_path / "m.onnx")
    with pytest.raises(MissingDependencyError, match=r"prunekit\[deploy\]"):
        evaluate_onnx(tmp_path / "m.onnx", (torch.randn(2, 3), torch.zeros(2, dtype=torch.long)))
    assert list(tmp_path.iterdir()) == []


def test_library_imports_and_prunes_without_onnx_installed(tmp_path):
    code = textwrap.dedent("""
        import sys
        for m in ("onnx", "onnxruntime", "onnxscript"):
            sys.modules[m] = None  # makes "import m" fail as if not installed
        import torch, prunekit, prunekit.export as ex
        from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
        model = torch.nn.Sequential(torch.nn.Linear(8, 4))
        UnstructuredPruner(model, UnstructuredConfig()).prune_to(0.5)
        try:
            ex.export_onnx(model, torch.randn(2, 8), sys.argv[1])
        except prunekit.errors.MissingDependencyError as e:
            print("ERR", e)
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.onnx")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "prunekit[deploy]" in out.stdout
