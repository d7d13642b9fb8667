"""One-shot layer-wise pruning: the SparseGPT solver's algebra, the Wanda criterion, the block-by-block
driver (pruned outputs fed forward), prune_ and the recipe method, and bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.errors import ConfigError, PruningError
from prunekit.importance import wanda_scores
from prunekit.pruners import LAYER_SOLVERS, LayerwiseConfig, prune_layerwise
from prunekit.pruners.allocations import kth_mask, row_mask
from prunekit.pruners.granularity import is_nm, nm_mask
from prunekit.pruners.sparsegpt import sparsegpt_prune


def _correlated(n=1024, cols=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) * 0.4
    return torch.randn(n, cols, generator=g) @ mix + 0.5 * torch.randn(n, cols, generator=g)


def _rel_error(x, w, w_new):
    return float(((x @ (w - w_new).T) ** 2).sum() / ((x @ w.T) ** 2).sum())


# ----------------------------------------------------------------------------- the SparseGPT solver
def test_sparsegpt_with_one_pruned_column_is_the_least_squares_optimum():
    # pruning one weight, the first column: OBS gives the exact least-squares fit of the other weights
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 5, generator=g) @ torch.randn(5, 5, generator=g)
    w = torch.randn(3, 5, generator=g)
    mask = torch.ones(3, 5)
    mask[:, 0] = 0
    new, kept = sparsegpt_prune(w, x.T @ x, mask=mask, damp=0.0)
    best = torch.linalg.lstsq(x[:, 1:].double(), (x @ w.T).double()).solution.T
    assert torch.equal(kept, mask)
    assert torch.all(new[:, 0] == 0)
    torch.testing.assert_close(new[:, 1:].double(), best, atol=1e-4, rtol=1e-4)


def test_sparsegpt_with_uncorrelated_inputs_keeps_weights_and_ranks_by_w2_h():
    # H diagonal: H⁻¹ has no off-diagonal terms, so no weight moves; the score w²/[H⁻¹]_cc = w²·H_cc
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    h = torch.diag(torch.tensor([16.0, 1.0, 1.0, 0.01]))
    new, mask = sparsegpt_prune(w, h, sparsity=0.5, damp=0.0, selection="row")
    assert torch.equal(mask, torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]))
    assert torch.equal(new, w * mask)


@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"nm": (2, 4)}])
def test_sparsegpt_reconstructs_better_than_magnitude_and_wanda(pattern):
    x, w = _correlated(), torch.randn(32, 64, generator=torch.Generator().manual_seed(3))
    new, mask = sparsegpt_prune(w, x.T @ x, **pattern, blocksize=16)
    if "nm" in pattern:
        mag, wanda = nm_mask(w.abs(), (2, 4)), nm_mask(wanda_scores(w, x.pow(2).sum(0)), (2, 4))
        assert is_nm(new, (2, 4))
    else:
        mag, wanda = kth_mask(w.abs(), w.numel() // 2), row_mask(wanda_scores(w, x.pow(2).sum(0)), 0.5)
    assert float(mask.mean()) == 0.5 and torch.all(new[mask == 0] == 0)
    err = _rel_error(x, w, new)
    assert err < 0.8 * _rel_error(x, w, w * mag)
    assert err < 0.8 * _rel_error(x, w, w * wanda)
    # the same mask without the weight updates is worse: the updates do the reconstruction
    assert err < 0.8 * _rel_error(x, w, w * mask)


def test_sparsegpt_selection_row_gives_every_row_the_sparsity_and_block_does_not_have_to():
    x = _correlated()
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(4)) * torch.linspace(0.1, 3, 16)[:, None]
    _, row = sparsegpt_prune(w, x.T @ x, sparsity=0.5, selection="row")
    _, block = sparsegpt_prune(w, x.T @ x, sparsity=0.5, selection="block")
    assert torch.all(row.mean(1) == 0.5)
    assert float(block.mean()) == 0.5 and not torch.all(block.mean(1) == 0.5)


def test_dead_inputs_do_not_break_the_cholesky():
    x = _correlated(cols=16)
    x[:, 3] = 0
    new, mask = sparsegpt_prune(torch.randn(4, 16), x.T @ x, sparsity=0.5)
    assert torch.isfinite(new).all() and float(mask.mean()) == 0.5


# ----------------------------------------------------------------------------- Wanda
def test_wanda_criterion_scores_weight_times_input_norm_and_row_allocation_prunes_each_row():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6))
    x = torch.randn(40, 8) * torch.arange(1, 9)
    ref = copy.deepcopy(net)
    r = pk.prune_(net, pk.UnstructuredConfig(sparsity=0.5, importance="wanda", allocation="row"),
                  calibration=pk.Calibration(x))
    want = row_mask(ref[0].weight.abs() * x.norm(dim=0), 0.5)
    assert torch.equal(r.masks["0.weight"], want)
    # the layer-wise solver uses the same formula (one layer: sequential or not, the inputs are x)
    lw = copy.deepcopy(ref)
    r2 = pk.prune_(lw, pk.LayerwiseConfig(solver="wanda", sparsity=0.5), calibration=pk.Calibration(x))
    assert torch.equal(r2.masks["0.weight"], want)


def test_row_allocation_needs_element_granularity():
    with pytest.raises(ConfigError, match="allocation 'row'.*granularity 'element', got 'filter'"):
        pk.UnstructuredConfig(sparsity=0.5, allocation="row", granularity="filter")


# ----------------------------------------------------------------------------- the driver
def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.mark.parametrize("sequential", [True, False])
def test_sequential_calibrates_each_layer_on_the_pruned_layers_before_it(sequential):
    net, x = _mlp(), torch.randn(64, 8)
    dense = copy.deepcopy(net)
    r = prune_layerwise(net, LayerwiseConfig(solver="wanda", sparsity=0.5, sequential=sequential),
                        pk.Calibration(x, batch_size=16))
    source = net if sequential else dense  # the model whose layer-0 outputs layer 2 was calibrated on
    h = torch.relu(source[0](x))
    want = row_mask(wanda_scores(dense[2].weight, h.pow(2).sum(0)), 0.5)
    assert torch.equal(r.masks.mask("2.weight"), want)
    assert r.blocks == ("" if sequential else None)
    assert r.tokens["4"] == 64 and r.sparsity == 0.5


def _bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32)
    return transformers.BertModel(cfg).eval()


def test_transformer_2_4_every_linear_sparsegpt_and_wanda_beat_magnitude():
    model = _bert()
    ids = torch.randint(0, 120, (32, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).last_hidden_state
    errors = {}
    for solver in LAYER_SOLVERS.names():
        m = copy.deepcopy(model)
        r = pk.prune_(m, pk.LayerwiseConfig(solver=solver, granularity="nm"),
                      calibration=pk.Calibration(ids, batch_size=8))
        linears = [n for n, x in m.named_modules() if isinstance(x, nn.Linear)]
        assert sorted(r.masks) == sorted(f"{n}.weight" for n in linears) and len(linears) == 2 * 6 + 1
        assert all(is_nm(x.weight, (2, 4)) for x in m.modules() if isinstance(x, nn.Linear))
        errors[solver] = float((m(ids).last_hidden_state - ref).detach().pow(2).mean())
    assert errors["sparsegpt"] < errors["magnitude"] and errors["wanda"] < errors["magnitude"]


def test_decoder_with_a_kv_cache_prunes_block_by_block_without_growing_the_cache():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 40, (8, 12))
    r = prune_layerwise(model, LayerwiseConfig(solver="sparsegpt", sparsity=0.5, exclude=("lm_head",)),
                        pk.Calibration(ids, batch_size=4))
    assert r.blocks == "model.layers" and "lm_head.weight" not in r.layer_sparsity
    assert set(r.tokens.values()) == {8 * 12} and r.sparsity == 0.5
    assert torch.isfinite(model(ids).logits).all()


def test_recipe_method_prunes_after_dense_training(tmp_path):
    from prunekit.pipeline import parse_recipe, run_recipe

    recipe = {"version": 2, "name": "lw", "seed": 0, "data": "mnist", "model": "lenet300",
              "train": {"epochs": 1, "lr": 0.05, "batch_size": 64},
              "prune": {"method": "layerwise", "solver": "sparsegpt", "granularity": "nm", "nm": [2, 4],
                        "calibration_samples": 32},
              "recover": {"epochs": 0}, "measure": {"latency_batches": [1], "latency_repeats": 1}}
    report = run_recipe(parse_recipe(recipe), tmp_path / "run", progress=False, quiet=True)
    assert report["sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert all(v == 0.5 for v in report["layerwise"]["layer_sparsity"].values())
    assert report["layerwise"]["solver"] == "sparsegpt" and report["layerwise"]["calibration_samples"] == 32
    assert report["saved_nm"]["layers_checked"] == report["saved_nm"]["layers_nm"] == 3
    assert report["pruned"]["accuracy"] > 0.5


# ----------------------------------------------------------------------------- bad input
def test_2_4_on_a_linear_whose_input_is_not_a_multiple_of_4_names_it_before_any_work():
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ConfigError, match="'2.weight' has input size 6.*exclude that layer"):
        pk.prune_(net, pk.LayerwiseConfig(solver="sparsegpt", granularity="nm"),
                  calibration=pk.Calibration(torch.randn(8, 8)))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("solver", ["wanda", "sparsegpt"])
def test_missing_calibration_is_refused_for_solvers_that_need_it(solver):
    with pytest.raises(ConfigError, match=f"solver '{solver}' prunes from calibration inputs: pass calibration="):
        pk.prune_(_mlp(), pk.LayerwiseConfig(solver=solver, sparsity=0.5))
    r = pk.prune_(_mlp(), pk.LayerwiseConfig(solver="magnitude", sparsity=0.5))  # needs no data
    assert r.sparsity == 0.5


def test_tied_weights_are_refused_naming_both():
    net = _mlp()
    head = nn.Linear(16, 16)
    head.weight = net[2].weight
    net.append(head)
    with pytest.raises(ConfigError, match=r"2.weight is the same tensor as 5.weight.*exclude=\('2',\)"):
        prune_layerwise(net, LayerwiseConfig(solver="magnitude", sparsity=0.5))


class _Parallel(nn.Module):
    """Two blocks in a ModuleList that both read the input: not a chain."""

    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    def forward(self, x):
        return self.heads[0](x) + self.heads[1](x)


def test_blocks_that_do_not_chain_are_refused_unless_not_sequential():
    x = torch.randn(16, 4)
    with pytest.raises(PruningError, match="block 1 of 'heads' does not receive block 0's output.*sequential=False"):
        prune_layerwise(_Parallel(), LayerwiseConfig(solver="wanda", sparsity=0.5), pk.Calibration(x))
    r = prune_layerwise(_Parallel(), LayerwiseConfig(solver="wanda", sparsity=0.5, sequential=False), pk.Calibration(x))
    assert r.sparsity == 0.5


@pytest.mark.parametrize("kwargs, match", [
    ({"solver": "obs", "sparsity": 0.5}, "unknown layer-wise solver 'obs'; choose one of: magnitude, sparsegpt, wanda"),
    ({"solver": "wanda"}, "needs sparsity="),
    ({"solver": "wanda", "granularity": "nm", "sparsity": 0.3}, "fixes sparsity at 1 − N/M = 0.5"),
    ({"solver": "wanda", "sparsity": 0.5, "compare": "block"},
     "compare \\(solver 'wanda'\\)='block' is not one of: row"),
    ({"solver": "sparsegpt", "granularity": "nm", "nm": (2, 8), "blocksize": 12}, "blocksize=12 must be a multiple"),
    ({"solver": "sparsegpt", "sparsity": 1.0}, "sparsity=1.0: give the fraction"),
    ({"solver": "wanda", "sparsity": 0.5, "importance": "l1"}, "picks its scores with solver="),
])
def test_bad_layerwise_configs_fail_on_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LayerwiseConfig(**kwargs)


def test_bad_exclude_and_blocks_are_named():
    with pytest.raises(ConfigError, match=r"exclude pattern\(s\) \['lm_head'\] match no Linear layer"):
        prune_layerwise(_mlp(), LayerwiseConfig(solver="magnitude", sparsity=0.5, exclude=("lm_head",)))
    with pytest.raises(ConfigError, match="blocks='encoder' is not a submodule"):
        prune_layerwise(_mlp(), LayerwiseConfig(solver="wanda", sparsity=0.5, blocks="encoder"),
                        pk.Calibration(torch.randn(8, 8)))
