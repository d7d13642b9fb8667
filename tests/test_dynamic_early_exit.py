"""Early exits (prunekit.dynamic): chains reproduce every supported family, never-exiting equals the static model,
batched serving gives the batch-1 answers, thresholds meet their budget, bad input fails clearly, saved models load
back from data only, and the pipeline writes the report contract."""

import json

import pytest
import torch
import yaml
from torch import nn

from prunekit.dynamic import (
    Chain,
    DynamicConfig,
    EarlyExitConfig,
    attach_exits,
    load_dynamic,
    outputs_equal,
    save_dynamic,
)
from prunekit.dynamic.thresholds import ExitScores, exit_costs, score_exits, select_thresholds
from prunekit.errors import ConfigError, ModelLoadError, PruningError, RecipeError
from prunekit.models import build_model
from prunekit.pipeline import load_recipe, parse_recipe, run_recipe
from prunekit.structured.serialize import save_pruned

pytestmark = pytest.mark.usefixtures("one_thread")


def _tv_vit():
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10)


def _timm_vit():
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=3,
                             num_classes=10)


def _timm_resnet():
    import timm

    return timm.create_model("resnet10t", pretrained=False, num_classes=10)


def _tv_resnet():
    from torchvision.models import resnet18

    return resnet18(num_classes=10)


def _tv(name: str, **kwargs):
    def make():
        import torchvision.models as tv

        return getattr(tv, name)(num_classes=10, **kwargs)
    return make


def _tv_convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10)


def _timm(name: str):
    def make():
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10)
    return make


FAMILIES = {
    "resnet_mini": (lambda: build_model("resnet_mini", (1, 8, 8), 10), (1, 8, 8), "resnet_mini"),
    "cnn1d": (lambda: build_model("cnn1d", (1, 40), 10), (1, 40), "sequential"),
    "lenet300": (lambda: build_model("lenet300", (1, 8, 8), 10), (1, 8, 8), "sequential"),
    "torchvision_resnet18": (_tv_resnet, (3, 32, 32), "resnet"),
    "timm_resnet10t": (_timm_resnet, (3, 32, 32), "resnet"),
    "torchvision_vit": (_tv_vit, (3, 32, 32), "torchvision_vit"),
    "timm_vit": (_timm_vit, (3, 32, 32), "timm_vit"),
    "torchvision_mobilenet_v3_small": (_tv("mobilenet_v3_small"), (3, 32, 32), "torchvision_features"),
    "torchvision_mobilenet_v2": (_tv("mobilenet_v2", width_mult=0.25), (3, 32, 32), "torchvision_features"),
    "torchvision_convnext": (_tv_convnext, (3, 32, 32), "torchvision_features"),
    "torchvision_regnet": (_tv("regnet_y_400mf"), (3, 32, 32), "torchvision_regnet"),
    "timm_mobilenetv3": (_timm("mobilenetv3_small_050"), (3, 32, 32), "timm_efficientnet"),
    "timm_efficientnet": (_timm("efficientnet_b0"), (3, 32, 32), "timm_efficientnet"),
}


def test_a_model_whose_forward_the_layout_misreads_is_refused():
    from torchvision.models import squeezenet1_1  # features + classifier, but its classifier is a conv head

    with pytest.raises(PruningError, match="does not reproduce the model's forward"):
        attach_exits(squeezenet1_1(num_classes=10).eval(), torch.randn(2, 3, 64, 64), 10, EarlyExitConfig())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_chain_reproduces_the_model_and_never_exiting_equals_it(family):
    make, shape, layout = FAMILIES[family]
    model = make().eval()
    x = torch.randn(3, *shape)
    chain = Chain.of(model, x)
    assert chain.layout_name == layout
    assert len(chain.boundaries()) >= 1
    dyn = attach_exits(model, x, 10, EarlyExitConfig(head="pool")).eval()
    assert dyn.thresholds == [1.0] * len(chain.boundaries())  # a threshold of 1 is never passed
    with torch.no_grad():
        assert torch.equal(dyn(x), model(x))  # batched
        assert torch.equal(dyn(x[:1]), model(x[:1]))  # batch 1
    assert dyn.last_exit.tolist() == [len(dyn.points)]


def _mixed(model, x, cfg=None):
    """A dynamic model whose first exit takes about half the inputs of ``x``."""
    dyn = attach_exits(model, x, 10, cfg or EarlyExitConfig(exits=[0, 3], head="pool")).eval()
    with torch.no_grad():
        conf = [dyn._score(z) for z in dyn.forward_all(x)[:-1]]
    dyn.set_thresholds([float(conf[0].median()), float(conf[1].median())])
    return dyn


def test_batched_serving_gives_every_input_its_batch_1_answer(net, digits):
    x = digits.x_test[:40]
    dyn = _mixed(net, x)
    with torch.no_grad():
        batched = dyn(x)
        exits = dyn.last_exit.clone()
        single = torch.cat([dyn(x[i:i + 1]) for i in range(len(x))])
    assert 0 < int((exits == 0).sum()) < len(x)  # mixed exits
    assert torch.allclose(batched, single, atol=1e-5)
    # and the exits taken are those the scores predict
    scores = score_exits(dyn, x, digits.y_test[:40])
    assert scores.exits(torch.tensor(dyn.thresholds)).tolist() == exits.tolist()


def test_mean_macs_follow_the_path_taken(net, digits):
    x = digits.x_test[:40]
    dyn = _mixed(net, x)
    costs = exit_costs(dyn, x[:1], latency=False)
    assert costs["macs"] == sorted(costs["macs"])  # later exits cost more
    assert costs["macs"][-1] > costs["static_macs"]  # the full path also pays for the heads
    from prunekit.dynamic.early_exit_method import describe_early_exit

    facts = describe_early_exit(dyn, x, digits.y_test[:40])
    hist = facts["exit_histogram"]
    assert sum(hist) == 40
    assert facts["mean_macs"] == pytest.approx(sum(h * c for h, c in zip(hist, costs["macs"], strict=True)) / 40)


def test_thresholds_meet_the_accuracy_budget_and_the_cost_budget():
    g = torch.Generator().manual_seed(0)
    n = 400
    conf = torch.rand(n, 2, generator=g)
    final = torch.rand(n, generator=g) < 0.9
    # an exit is right when confident: P(right) grows with confidence
    early = torch.rand(n, 2, generator=g) < 0.5 + 0.5 * conf
    scores = ExitScores(conf, torch.cat([early, final[:, None]], 1))
    cost = [1.0, 2.0, 4.0]
    sel = select_thresholds(scores, cost, 4.0, max_drop_pt=2.0)
    t = torch.tensor(sel.thresholds)
    assert scores.lost(t) <= 0.02 + 1e-9
    assert sel.val_cost < 1.0  # some inputs exit
    looser = select_thresholds(scores, cost, 4.0, max_drop_pt=10.0)
    assert looser.val_cost <= sel.val_cost
    budget = select_thresholds(scores, cost, 4.0, kept=0.5)
    assert budget.val_cost <= 0.5
    with pytest.raises(PruningError, match="no exit thresholds keep the mean cost within 0.1"):
        select_thresholds(scores, cost, 4.0, kept=0.1)


@pytest.mark.parametrize("kwargs,match", [
    ({"thresholds": [0.0]}, r"exit threshold 0.0 is outside \(0, 1\]"),
    ({"thresholds": [1.5]}, r"exit threshold 1.5 is outside \(0, 1\]"),
    ({"confidence": "margin"}, "unknown exit confidence 'margin'; choose one of: entropy, max_softmax"),
    ({"head": "mlp"}, "unknown exit head 'mlp'"),
    ({"macs_kept": 0.5, "latency_kept": 0.5}, "give one cost budget"),
    ({"macs_kept": 1.5}, r"macs_kept must be in \(0, 1\]"),
    ({"train": "both"}, "unknown early_exit.train 'both'"),
])
def test_bad_early_exit_options_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EarlyExitConfig(**kwargs)


def test_exit_points_must_be_block_boundaries(net, digits):
    x = digits.x_test[:2]
    with pytest.raises(ConfigError, match=r"exit point 'layers.0.conv1' is not a block boundary .*valid: layers.0, "):
        attach_exits(net, x, 10, EarlyExitConfig(exits=["layers.0.conv1"]))
    with pytest.raises(ConfigError, match="exit point 'layers.8' is not a block boundary"):  # the last block: no
        attach_exits(net, x, 10, EarlyExitConfig(exits=["layers.8"]))
    with pytest.raises(ConfigError, match="3 thresholds for 2 exits"):
        attach_exits(net, x, 10, EarlyExitConfig(exits=[0, 1], thresholds=[0.9, 0.9, 0.9]))


def test_models_the_chain_cannot_read_are_refused():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(PruningError, match="Odd: no chain layout reads this model"):
        Chain(Odd())

    class Doubled(type(build_model("resnet_mini", (1, 8, 8), 10))):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(PruningError, match="does not reproduce the model's forward"):
        Chain.of(Doubled(1, 10).eval(), torch.randn(2, 1, 8, 8))


def test_saved_dynamic_model_loads_back_from_data_only(net, digits, tmp_path):
    x = digits.x_test[:16]
    dyn = _mixed(net, x, EarlyExitConfig(exits=["layers.0", "layers.3"], head="conv", confidence="entropy"))
    save_pruned(net, tmp_path, constructor="resnet_mini", input_shape=digits.input_shape, num_classes=10)
    assert save_dynamic(dyn, tmp_path) == ["dynamic.json", "dynamic.safetensors"]
    back = load_dynamic(tmp_path)
    assert back.thresholds == dyn.thresholds and back.confidence == "entropy"
    assert outputs_equal(back, dyn, x)
    meta = json.loads((tmp_path / "dynamic.json").read_text())
    meta["method"] = "os:system"
    (tmp_path / "dynamic.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="unknown dynamic method 'os:system'"):
        load_dynamic(tmp_path)
    meta["method"], meta["spec"]["head_width"] = "early_exit", 7
    (tmp_path / "dynamic.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="does not fit the saved heads"):
        load_dynamic(tmp_path)


def test_dynamic_section_validation():
    with pytest.raises(ConfigError, match="give exactly one method, got none"):
        DynamicConfig()
    recipe = load_recipe("recipes/early-exit-resnet-mnist.yaml", notice=None)
    assert recipe.dynamic.method == "early_exit" and recipe.prune.method == "none"
    assert recipe.dynamic.options.exits == ["layers.0", "layers.2", "layers.5"]
    raw = yaml.safe_load(open("recipes/early-exit-resnet-mnist.yaml").read())
    with pytest.raises(RecipeError, match="remove export.formats from a dynamic recipe"):
        parse_recipe({**raw, "export": {"formats": ["onnx"]}})
    with pytest.raises(RecipeError, match=r"recipe.dynamic.early_exit.thresholds\[0\]|outside \(0, 1\]"):
        parse_recipe({**raw, "dynamic": {"early_exit": {"thresholds": [2.0]}}})
    with pytest.raises(RecipeError, match="unknown key"):
        parse_recipe({**raw, "dynamic": {"early_exits": {}}})


TINY = {
    "name": "tiny-exits", "seed": 0, "model": "resnet_mini", "data": "digits",
    "train": {"epochs": 2, "lr": 0.05}, "prune": {"method": "none"},
    "dynamic": {"early_exit": {"exits": ["layers.0", "layers.3"], "epochs": 2, "lr": 0.01, "max_drop_pt": 1.0}},
    "measure": {"latency_batches": [1, 32]},
}


def test_early_exit_recipe_writes_the_report_contract_and_a_loadable_model(tmp_path, digits):
    out = tmp_path / "out"
    report = run_recipe(parse_recipe(TINY), out, progress=False, quiet=True)
    dyn = report["dynamic"]
    n = len(digits.x_test)
    assert sum(dyn["exit_histogram"]) == n
    assert report["pruned"]["macs"] == round(dyn["mean_macs"])
    assert report["pruned"]["macs"] <= dyn["path_macs"][-1]
    assert set(report["pruned"]["latency_ms"]) == {"1", "32"} == set(report["dense"]["latency_ms"])
    assert report["pruned"]["latency"]["1"]["n"] == n  # every test input timed
    d, p = report["dense"]["latency_ms"], report["pruned"]["latency_ms"]
    assert report["speedup"]["1"] == pytest.approx(d["1"] / p["1"])
    for name in ("report.md", "dynamic.json", "dynamic.safetensors", "pruned.json"):
        assert (out / name).is_file()
    back = load_dynamic(out)
    from prunekit.training import evaluate

    assert evaluate(back, digits.x_test, digits.y_test).accuracy == pytest.approx(report["pruned"]["accuracy"])
    assert "| exit | inputs |" in (out / "report.md").read_text()
