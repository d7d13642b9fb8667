"""Inputs for any model (issue 16.1): shapes, dtypes, keyword inputs and a user's function in ``prunekit check``
and the Python API; family defaults from the zoo; outputs compared leaf by leaf; input-dependent control flow
detected."""

import json
import textwrap

import pytest
import torch
from torch import nn

from prunekit.cli.main import main
from prunekit.errors import ConfigError
from prunekit.graph import Inputs
from prunekit.inputs import InputSpec, describe_inputs, perturbed
from prunekit.pruners import StructuredConfig, check_model
from prunekit.pruners.check import compare_leaves, control_flow_difference

MODELS = '''
import torch
from torch import nn


class TwoInputs(nn.Module):
    """Two images in, a dict of a list out (like optical flow / detection outputs)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, image1, image2, scale=None):
        h = torch.relu(self.a(image1)) + torch.relu(self.a(image2))
        out = self.b(h)
        if scale is not None:
            out = out * scale.mean()
        return {"flows": [out, out.flip(-1)], "n": out.shape[0]}


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, input_ids):
        return self.fc2(torch.relu(self.fc1(self.emb(input_ids)))).mean(1)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 4)
        self.c = nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h) if x.sum() > 0 else self.c(h)


def two_inputs():
    return TwoInputs()


def tokens():
    return Tokens()


def branchy():
    return Branchy()


def pair(model):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)), {"scale": torch.ones(3)}


def broken():
    raise RuntimeError("no data here")
'''


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    (tmp_path / "inputs_user_models.py").write_text(textwrap.dedent(MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import inputs_user_models

    return importlib.reload(inputs_user_models)


def _check(capsys, *argv):
    code = main(["check", *argv, "--no-latency", "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out.strip().splitlines()[-1]), out


def test_two_positional_inputs_by_shape(capsys, user_models):
    code, rep, out = _check(capsys, "inputs_user_models:two_inputs", "--input-shape", "1,3,8,8",
                            "--input-shape", "1,3,8,8")
    assert code == 0 and rep["ok"] and rep["equivalent"] and rep["units_removed"] > 0, rep
    assert rep["inputs"] == "arg0: [1, 3, 8, 8] float32; arg1: [1, 3, 8, 8] float32"
    assert "inputs     arg0: [1, 3, 8, 8] float32; arg1" in out.out


def test_keyword_inputs_and_integer_dtype(capsys, user_models):
    code, rep, _ = _check(capsys, "inputs_user_models:tokens", "--input-shape", "input_ids=2,5",
                          "--input-dtype", "int64")
    assert code == 0 and rep["ok"] and rep["inputs"] == "input_ids: [2, 5] int64"


def test_an_inputs_function_gives_args_and_kwargs(capsys, user_models):
    code, rep, _ = _check(capsys, "inputs_user_models:two_inputs", "--inputs", "inputs_user_models:pair")
    assert code == 0 and rep["ok"], rep
    assert rep["inputs"] == "arg0: [2, 3, 8, 8] float32; arg1: [2, 3, 8, 8] float32; scale: [3] float32"


@pytest.mark.parametrize("argv,match", [
    (["--input-shape", "1,3,x"], "is not a shape"),
    (["--input-shape", "1,0,8"], "every size must be ≥ 1"),
    (["--input-shape", "1,3,8,8", "--input-dtype", "complex7"], "is not one of"),
    (["--input-dtype", "int64"], "add --input-shape"),
    (["--inputs", "inputs_user_models:nothing"], "cannot import 'nothing'"),
    (["--inputs", "inputs_user_models:broken"], "the function raised RuntimeError: no data here"),
    (["--input-shape", "1,5,8,8", "--input-shape", "1,3,8,8"],
     "fails on its example inputs in module 'a' (Conv2d) (it got arg0: [1, 5, 8, 8] float32)"),
    (["--input-shape", "1,3,8,8", "--input-shape", "1,3,8,8", "--input-dtype", "int64"],
     "in module 'a' (Conv2d) (it got arg0: [1, 3, 8, 8] int64)"),
])
def test_bad_inputs_are_one_error_naming_the_value(capsys, user_models, argv, match):
    code, rep, out = _check(capsys, "inputs_user_models:two_inputs", *argv)
    assert code != 0 and not rep["ok"] and match in rep["error"]
    assert "Traceback" not in out.err


def test_input_dependent_control_flow_is_detected(capsys, user_models):
    code, rep, _ = _check(capsys, "inputs_user_models:branchy", "--input-shape", "4,8")
    assert code != 0 and not rep["ok"]
    assert "depends on input values" in rep["error"] and "'b'" in rep["error"] and "'c'" in rep["error"]
    model = user_models.branchy()
    assert control_flow_difference(model, torch.ones(2, 8)) is not None
    assert control_flow_difference(nn.Sequential(nn.Linear(8, 4)), torch.ones(2, 8)) is None


def test_inputs_api_and_leafwise_comparison(user_models):
    model = user_models.two_inputs()
    x = Inputs(torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8), scale=torch.ones(2))
    rep = check_model("two", model, x, StructuredConfig(sparsity=0.5), latency=False)
    assert rep.ok and rep.inputs.endswith("scale: [2] float32")
    a = {"boxes": [torch.ones(2, 4)], "labels": torch.tensor([1, 2])}
    assert compare_leaves(a, {"boxes": [torch.ones(2, 4) * 1.5], "labels": torch.tensor([1, 2])}) == \
        (pytest.approx(0.5), "out['boxes'][0]")
    assert compare_leaves(a, {"boxes": [torch.ones(3, 4)], "labels": torch.tensor([1, 2])}) == \
        (float("inf"), "out['boxes'][0]")
    assert compare_leaves(a, {"boxes": [torch.ones(2, 4)], "labels": torch.tensor([1, 3])}) == \
        (float("inf"), "out['labels']")
    assert compare_leaves(a, {"boxes": [torch.ones(2, 4)], "scores": torch.tensor([1, 2])})[0] == float("inf")


def test_input_spec_builds_seeded_tensors_in_range():
    spec = InputSpec.parse(["2,3", "ids=2,7"], ["float64", "ids=int64"])
    emb = nn.Sequential(nn.Embedding(11, 4), nn.Embedding(5, 4))
    built = spec.build(emb)
    assert isinstance(built, Inputs) and built.args[0].dtype == torch.float64
    assert built.kwargs["ids"].dtype == torch.int64 and int(built.kwargs["ids"].max()) < 5  # the smallest table
    assert torch.equal(spec.build(emb).args[0], built.args[0])
    assert describe_inputs(([torch.zeros(3, 4, 4)] * 2,)) == "arg0: list of 2 × [3, 4, 4] float32"
    assert torch.equal(perturbed((torch.ones(2),))[0], -torch.ones(2))
    with pytest.raises(ConfigError, match="given 2 times for 3 inputs"):
        InputSpec.parse(["1", "2", "3"], ["float32", "int64"])
    with pytest.raises(ConfigError, match="names no keyword input"):
        InputSpec.parse(["1"], ["ids=int64"])
