"""Every torchvision family the zoo knows (issue 16.2/16.7): each builder constructs offline, runs on the family's
inputs, and prunes with equivalence. The default run samples one model per family; ``slow`` runs them all."""

import pytest

from prunekit.pruners import StructuredConfig, check_model
from prunekit.pruners.check import run_forward
from prunekit.zoo import load, tv_family

tv = pytest.importorskip("torchvision")

FAMILIES = ("detection", "segmentation", "video", "optical_flow", "quantization")
SAMPLE = {"detection": "ssdlite320_mobilenet_v3_large", "segmentation": "lraspp_mobilenet_v3_large",
          "video": "mc3_18", "optical_flow": "raft_small", "quantization": "quantized_shufflenet_v2_x0_5"}
ALL = [(f, n) for f in FAMILIES for n in tv.models.list_models(module=getattr(tv.models, f))]


def _outputs_fit(family: str, out, batch: int = 1) -> None:
    if family == "detection":
        assert isinstance(out, list) and len(out) == batch and {"boxes", "scores", "labels"} <= set(out[0])
    elif family == "segmentation":
        assert out["out"].shape[:2] == (batch, 21)
    elif family == "video":
        assert out.shape == (batch, 400)
    elif family == "optical_flow":
        assert isinstance(out, list) and out[-1].shape[:2] == (batch, 2)
    else:
        assert out.shape == (batch, 1000)


def _check(name: str):
    zm = load(f"torchvision:{name}", small=True)
    config = StructuredConfig(sparsity=0.5, exclude=tuple(zm.pinned))
    return zm, check_model(zm.spec, zm.model, zm.example_inputs, config, latency=False, compare_at=zm.compare_at)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_sample_of_each_family_prunes_with_equivalence(family, one_thread):
    name = SAMPLE[family]
    assert tv_family(tv, name) == family
    zm, rep = _check(name)
    assert zm.kind == family if family != "quantization" else zm.kind == "image"
    assert rep.ok and rep.equivalent and rep.units_removed > 0, rep.error
    _outputs_fit(family, run_forward(zm.model, zm.example_inputs))


def test_family_inputs_are_the_families_shapes():
    from prunekit.zoo import _tv_clip, tv_kwargs

    assert load("torchvision:r3d_18", small=True).example_inputs[0].shape == (1, 3, 8, 64, 64)
    assert _tv_clip(tv, "r3d_18", small=False) == (16, 112) and _tv_clip(tv, "mvit_v2_s", small=True) == (16, 224)
    flow = load("torchvision:raft_small", batch=2)
    assert [t.shape for t in flow.example_inputs] == [(2, 3, 128, 128)] * 2 and "feature_encoder.conv" in flow.pinned
    # SSD builders fix their own size (passing min_size made them fail); the others are resized to the input
    assert tv_kwargs(tv, "ssd300_vgg16", 320) == {"weights_backbone": None}
    assert tv_kwargs(tv, "retinanet_resnet50_fpn", 320) == {"weights_backbone": None, "min_size": 320, "max_size": 320}
    assert tv_kwargs(tv, "quantized_resnet18") == {"quantize": False}


@pytest.mark.slow
@pytest.mark.parametrize("family,name", ALL, ids=[n for _, n in ALL])
def test_every_builder_of_the_family_prunes_with_equivalence(family, name, one_thread):
    zm, rep = _check(name)
    assert rep.ok and rep.equivalent, rep.error
    _outputs_fit(family, run_forward(zm.model, zm.example_inputs))
