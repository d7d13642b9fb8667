"""Token merging (ToMe) and token keeping (EViT): r = 0 / keep_rate = 1 is the static model, the schedule leaves the
promised token counts, the class token survives, merged tokens keep their mass, bad schedules fail clearly, and a
saved model loads back."""

import pytest
import torch

from prunekit.dynamic import TokenKeepConfig, TokenMergeConfig, load_dynamic, outputs_equal, save_dynamic
from prunekit.dynamic.tokens import bipartite_merge, keep_attentive, token_model
from prunekit.errors import ConfigError, PruningError
from prunekit.models import build_model
from prunekit.structured.serialize import save_pruned

pytestmark = pytest.mark.usefixtures("one_thread")


def _timm(**kw):
    import timm

    return timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, depth=4,
                             num_classes=10, **kw)


def _tv():
    from torchvision.models import VisionTransformer

    m = VisionTransformer(image_size=32, patch_size=4, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64,
                          num_classes=10)
    torch.nn.init.normal_(m.heads.head.weight, std=0.1)  # torchvision starts the head at zero
    return m


VITS = {"vit_mini": (lambda: build_model("vit_mini", (1, 28, 28), 10), (1, 28, 28), 50),
        "timm_deit": (_timm, (3, 32, 32), 65), "torchvision_vit": (_tv, (3, 32, 32), 65)}


@pytest.mark.parametrize("family", sorted(VITS))
def test_r_zero_and_keep_all_equal_the_static_model_and_r_merges_r_tokens_per_block(family):
    make, shape, tokens = VITS[family]
    model = make().eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(token_model(model, x, "token_merge", TokenMergeConfig(r=0))(x), ref)
        assert torch.equal(token_model(model, x, "token_keep", TokenKeepConfig(keep_rate=1.0, blocks=[1]))(x), ref)
        tm = token_model(model, x, "token_merge", TokenMergeConfig(r=5))
        y = tm(x)
    depth = len(tm.chain.blocks)
    assert tm.last_tokens == [tokens - 5 * i for i in range(depth + 1)]
    assert y.shape == ref.shape and torch.isfinite(y).all()
    assert not torch.allclose(y, ref)  # it did change the computation
    with torch.no_grad():
        tk = token_model(model, x, "token_keep", TokenKeepConfig(keep_rate=0.5, blocks=[1]))
        tk(x)
    assert tk.last_tokens[2] == 1 + -(-(tokens - 1) // 2) + 1  # class token, the kept half (rounded up), one fused


@pytest.mark.parametrize("family", ["vit_mini", "timm_deit", "torchvision_vit"])
def test_the_manual_attention_path_equals_each_block_with_unit_sizes(family):
    make, shape, _ = VITS[family]
    model = make().eval()
    x = torch.randn(2, *shape)
    tm = token_model(model, x, "token_merge", TokenMergeConfig(r=0))
    with torch.no_grad():
        h = tm.chain.stem(x)
        block, ops = tm.chain.blocks[0], tm._ops[0]
        got, _ = tm._block(block, ops, h, None, 0)
        assert torch.allclose(got, block(h), atol=1e-5)


def test_merging_keeps_the_class_token_and_the_size_weighted_mass():
    torch.manual_seed(0)
    x, k = torch.randn(2, 11, 4), torch.randn(2, 11, 3)
    size = torch.randint(1, 4, (2, 11, 1)).float()
    out, s = bipartite_merge(x, k, size, r=3, protect=1)
    assert out.shape == (2, 8, 4) and s.shape == (2, 8, 1)
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(s[:, 0], size[:, 0])  # class token first, untouched
    assert torch.allclose((out * s).sum(1), (x * size).sum(1), atol=1e-5)  # Σ size·x is conserved
    assert torch.equal(s.sum(1), size.sum(1))
    # parallel keys merge first: token 4 (A: even positions) into token 3 (B: odd positions, B index 1)
    k2 = torch.randn(1, 11, 3)
    k2[0, 4] = k2[0, 3] * 5
    out2, s2 = bipartite_merge(x[:1], k2, torch.ones(1, 11, 1), r=1, protect=1)
    assert float(s2.max()) == 2.0 and s2[0, 5 + 1, 0] == 2.0  # after the 5 unmerged A tokens
    assert torch.allclose(out2[0, 6], (x[0, 3] + x[0, 4]) / 2)


def test_token_keeping_keeps_the_most_attended_and_fuses_the_rest():
    x = torch.arange(6.0).reshape(1, 6, 1).expand(1, 6, 2).clone()
    attn = torch.tensor([[0.1, 0.5, 0.05, 0.3, 0.05]])  # over tokens 1..5
    out, s = keep_attentive(x, attn, torch.ones(1, 6, 1), keep=2)
    assert out[0, :3, 0].tolist() == [0.0, 2.0, 4.0]  # class, then tokens 2 and 4 in order
    assert out[0, 3, 0].item() == pytest.approx((0.1 * 1 + 0.05 * 3 + 0.05 * 5) / 0.2)
    assert s[0, :, 0].tolist() == [1.0, 1.0, 1.0, 3.0]


def test_bad_token_schedules_are_refused():
    model = build_model("vit_mini", (1, 28, 28), 10).eval()
    x = torch.randn(1, 1, 28, 28)
    with pytest.raises(ConfigError, match=r"token_merge.r = 20 is too large for block 1: it has 30 tokens"):
        token_model(model, x, "token_merge", TokenMergeConfig(r=20))
    with pytest.raises(ConfigError, match="token_merge.r has 2 entries for 6 blocks"):
        token_model(model, x, "token_merge", TokenMergeConfig(r=[1, 2]))
    with pytest.raises(ConfigError, match="integers ≥ 0"):
        TokenMergeConfig(r=-1)
    with pytest.raises(ConfigError, match=r"keep_rate must be in \(0, 1\]"):
        TokenKeepConfig(keep_rate=0.0)
    with pytest.raises(ConfigError, match=r"token_keep.blocks \[7\] are not block indices"):
        token_model(model, x, "token_keep", TokenKeepConfig(blocks=[7]))
    nocls = _timm(class_token=False, global_pool="avg").eval()
    with pytest.raises(ConfigError, match="has no class token"):
        token_model(nocls, torch.randn(1, 3, 32, 32), "token_keep", TokenKeepConfig(blocks=[1]))
    cnn = build_model("resnet_mini", (1, 8, 8), 10).eval()
    with pytest.raises(PruningError, match="needs a vision transformer"):
        token_model(cnn, torch.randn(1, 1, 8, 8), "token_merge", TokenMergeConfig(r=1))


def test_a_saved_token_model_loads_back(tmp_path):
    model = build_model("vit_mini", (1, 28, 28), 10).eval()
    x = torch.randn(2, 1, 28, 28)
    tm = token_model(model, x, "token_merge", TokenMergeConfig(r=[4, 4, 2, 2, 0, 0]))
    save_pruned(model, tmp_path, constructor="vit_mini", input_shape=(1, 28, 28), num_classes=10)
    save_dynamic(tm, tmp_path)
    back = load_dynamic(tmp_path)
    assert back.per_block == [4, 4, 2, 2, 0, 0] and back.method == "token_merge"
    assert outputs_equal(back, tm, x)


def test_unit_sizes_may_be_left_out_of_a_merge():
    torch.manual_seed(1)
    x, k = torch.randn(2, 13, 5), torch.randn(2, 13, 3)
    a, sa = bipartite_merge(x, k, None, r=4, protect=1)
    b, sb = bipartite_merge(x, k, torch.ones(2, 13, 1), r=4, protect=1)
    assert torch.equal(sa, sb) and torch.allclose(a, b)


def test_token_methods_compose_with_heads_removed_by_structured_pruning():
    import prunekit as pk

    torch.manual_seed(0)
    model = build_model("vit_mini", (1, 28, 28), 10).eval()
    x = torch.randn(3, 1, 28, 28)
    pk.prune_(model, pk.StructuredConfig(budget=pk.Budget(macs_kept=0.5), importance="l2"), example_inputs=x[:1])
    heads = [b.attn.num_heads for b in model.blocks]
    assert min(heads) < 4  # whole heads went: the attention is narrower than the residual stream
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(token_model(model, x, "token_merge", TokenMergeConfig(r=0))(x), ref, atol=1e-6)
        assert torch.allclose(token_model(model, x, "token_keep", TokenKeepConfig(keep_rate=1.0, blocks=[1]))(x), ref,
                              atol=1e-6)
        y = token_model(model, x, "token_merge", TokenMergeConfig(r=4))(x)
    assert y.shape == ref.shape and torch.isfinite(y).all()


def test_vit_mini_conv_stem_keeps_one_token_per_patch_and_token_methods_apply():
    opts = {"patch": 2, "dim": 32, "depth": 2, "num_heads": 2, "stem": "conv"}
    model = build_model("vit_mini", (1, 28, 28), 10, opts).eval()
    x = torch.randn(3, 1, 28, 28)
    assert model.embed(x).shape == (3, 14 * 14 + 1, 32)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.patch_embed) == 3  # 3×3, stride-2 3×3, 1×1
    tm = token_model(model, x[:1], "token_keep", TokenKeepConfig(keep_rate=0.25, blocks=[0]))
    assert tm(x).shape == (3, 10) and tm.last_tokens == [197, 51, 51]  # class + 49 kept + 1 fused
    assert outputs_equal(token_model(model, x[:1], "token_merge", TokenMergeConfig(r=0)), model, x)
    with pytest.raises(ConfigError, match="power of two; got patch=3"):
        build_model("vit_mini", (1, 27, 27), 10, {"patch": 3, "stem": "conv"})
    with pytest.raises(ConfigError, match="stem must be 'patch' or 'conv'"):
        build_model("vit_mini", (1, 28, 28), 10, {"stem": "convolutional"})
    with pytest.raises(ConfigError, match="dim=30 is not divisible by num_heads=4"):
        build_model("vit_mini", (1, 28, 28), 10, {"dim": 30})
