"""Sensitivity analysis: curves leave the model unchanged, round-trip, and drive allocations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import score_groups, score_weights
from prunekit.sensitivity import Curve, Sensitivity, SensitivityConfig, allocate_sparsity, analyze, analyze_weights
from prunekit.training import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


def test_curves_cover_every_group_and_leave_the_model_unchanged(net, digits):
    graph = DependencyGraph.build(net, digits.x_train[:1])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = SensitivityConfig(ratios=(0.25, 0.5, 0.9), max_samples=60)
    sens = analyze(graph, digits.x_val[:60], digits.y_val[:60], score_groups(graph, "l2"), cfg)
    assert set(sens.curves) == {g.name for g in graph.prunable_groups()}
    for c in sens.curves.values():
        assert c.ratios == [0.25, 0.5, 0.9] and len(c.accuracy) == 3 and len(c.loss) == 3
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    base = evaluate(net, digits.x_val[:60], digits.y_val[:60])
    assert sens.dense_loss == pytest.approx(base.loss)
    again = Sensitivity.from_dict(json.loads(json.dumps(sens.to_dict())))
    assert again.to_dict() == sens.to_dict()
    table = sens.to_markdown()
    assert table.count("\n| ") == len(sens.curves) + 1 and "| stem.0 | 16 |" in table


def test_weight_curves_and_sparsity_allocation(net, digits):
    names = ["layers.0.conv1.weight", "layers.6.conv1.weight"]
    scores = score_weights(net, names, "l2", example_inputs=digits.x_train[:1])
    sens = analyze_weights(net, digits.x_val, digits.y_val, scores, SensitivityConfig(ratios=(0.5, 0.9),
                                                                                        max_samples=60))
    assert set(sens.curves) == set(names) and sens.kind == "weights"
    fake = Sensitivity("l2", 0.9, 1.0, {
        "a": Curve("a", 100, [0.5, 0.9], [0.8, 0.5], [1.5, 3.0]),  # fragile
        "b": Curve("b", 300, [0.5, 0.9], [0.9, 0.9], [1.0, 1.01]),
    })
    ratios = allocate_sparsity(fake, 0.7)
    assert ratios["b"] == pytest.approx(0.9) and ratios["a"] == pytest.approx(0.1)
    assert (100 * ratios["a"] + 300 * ratios["b"]) / 400 == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="sparsity target 0.95 is unreachable: the curves go up to 0.900"):
        allocate_sparsity(fake, 0.95)
    assert np.isfinite(list(ratios.values())).all()


def test_recalibrated_curves_use_batch_statistics_and_restore_them(net, digits):
    from prunekit.recovery.bn import recalibrated_bn

    graph = DependencyGraph.build(net, digits.x_train[:1])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y, recal = digits.x_val[:60], digits.y_val[:60], digits.x_train[:128]
    cfg = SensitivityConfig(ratios=(0.5,), max_samples=60)
    sens = analyze(graph, x, y, score_groups(graph, "l2"), cfg, recalibration=recal)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    with recalibrated_bn(net, recal):
        ref = evaluate(net, x, y)
    plain = evaluate(net, x, y)
    assert sens.dense_loss == pytest.approx(ref.loss) and abs(ref.loss - plain.loss) > 1e-3
    assert sens.recalibrated and Sensitivity.from_dict(json.loads(json.dumps(sens.to_dict()))).recalibrated
    assert not analyze(graph, x, y, score_groups(graph, "l2"), cfg).recalibrated


def test_cli_criteria_come_from_the_registry_and_misfits_list_what_fits(tmp_path, capsys):
    from prunekit.cli.main import main
    from prunekit.importance import names

    assert main(["sensitivity", "--importance", "bn_scale", "--unstructured", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    fits = ", ".join(names("weight"))
    assert f"'bn_scale' has no weight form (it has only a group form); choose one of: {fits}" in err
    assert main(["sensitivity", "--importance", "taylor", "--samples", "0", "--out", str(tmp_path / "o")]) == 2
    assert "criterion 'taylor' needs calibration data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before any training


def test_cli_takes_zoo_model_names_through_the_model_source_registry(tmp_path, capsys):
    pytest.importorskip("torchvision")
    from prunekit.cli.main import main
    from tests.test_zoo_recipes import _folder

    folder = _folder(tmp_path, n=6)
    out = tmp_path / "o"
    assert main(["sensitivity", "--model", "torchvision:mobilenet_v3_small", "--data", f"imagefolder:{folder}",
                 "--epochs", "0", "--ratios", "0.5", "--max-samples", "4", "--samples", "0", "--out", str(out),
                 "--threads", "1"]) == 0
    saved = json.loads((out / "sensitivity.json").read_text())
    assert saved["model"] == "torchvision:mobilenet_v3_small" and "features.0.0" in saved["curves"]
    assert all(len(c["accuracy"]) == 1 and 0 <= c["accuracy"][0] <= 1 for c in saved["curves"].values())
    # a zoo model on data it cannot take (1-channel 8x8 digits): one line before any training
    assert main(["sensitivity", "--model", "torchvision:resnet18", "--data", "digits", "--out",
                 str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--model torchvision:resnet18 cannot take the inputs of --data digits (shape [1, 1, 8, 8])" in err
    assert not (tmp_path / "bad").exists()
    assert main(["sensitivity", "--model", "torchvision:", "--out", str(tmp_path / "bad")]) == 2
    assert "names nothing after torchvision:" in capsys.readouterr().err
    assert main(["sensitivity", "--model", f"hf:{tmp_path / 'none'}", "--out", str(tmp_path / "bad")]) == 2
    assert "is not a directory" in capsys.readouterr().err
