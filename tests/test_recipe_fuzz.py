"""A fuzzer over the shipped recipes: a mutated recipe (keys deleted, renamed or retyped, enum values swapped,
numeric edges ±2⁶³, NaN, ±inf) either validates or fails with one RecipeError — never another exception.
Validation only: nothing is trained."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunekit.cli.run import shipped_recipe, shipped_recipe_names
from prunekit.errors import RecipeError
from prunekit.pipeline import parse_recipe

RECIPES = {n: yaml.safe_load(shipped_recipe(n).read_text()) for n in shipped_recipe_names()}
EDGES = [0, -1, 1, 2**63, -(2**63), 2**70, math.nan, math.inf, -math.inf, 1e30, -1e-30, 0.5, 1.0, True, None, "",
         "x", [], {}, [1, 2], {"a": 1}, "global", "uniform", "distill", "lottery", "structured", "nm", "l1", "taylor"]


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))


def _mutate(raw: dict, path: tuple, how: str, value) -> dict:
    raw = copy.deepcopy(raw)
    parent = raw
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "rename":
        parent[f"{last}x"] = parent.pop(last)
    else:
        parent[last] = value
    return raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_mutated_shipped_recipe_validates_or_raises_one_recipe_error(data):
    name = data.draw(st.sampled_from(sorted(RECIPES)))
    paths = list(_paths(RECIPES[name]))
    mutations = data.draw(st.lists(st.tuples(st.sampled_from(paths), st.sampled_from(["delete", "rename", "set"]),
                                             st.sampled_from(EDGES)), min_size=1, max_size=3))
    raw = RECIPES[name]
    for path, how, value in mutations:
        try:
            raw = _mutate(raw, path, how, value)
        except (KeyError, TypeError, AttributeError):
            continue  # an earlier mutation removed or retyped the parent
    try:
        recipe = parse_recipe(raw, name, notice=None)
    except RecipeError as e:
        assert len(str(e).splitlines()) == 1, str(e)
        return
    for value in _numbers(recipe.to_dict()):  # what validates is finite
        assert math.isfinite(value), (name, mutations)


def _numbers(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v)
    elif isinstance(node, float):
        yield node


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_shipped_recipes_themselves_validate(name):
    assert parse_recipe(RECIPES[name], name, notice=None).name == RECIPES[name]["name"]


CHEAP = {"version": 2, "name": "fuzz", "seed": 0, "data": "digits", "model": "lenet300",
         "train": {"epochs": 1, "lr": 0.05, "batch_size": 64},
         "prune": {"method": "one_shot", "importance": "l1", "sparsity": 0.5, "allocation": "global"},
         "recover": {"epochs": 1, "lr": 0.01, "batch_size": 64},
         "measure": {"latency_batches": [1], "latency_repeats": 1}}
RUN_KEYS = [("train", "lr"), ("train", "momentum"), ("train", "weight_decay"), ("train", "batch_size"),
            ("train", "epochs"), ("train", "optimizer"), ("prune", "sparsity"), ("prune", "importance"),
            ("prune", "allocation"), ("prune", "method"), ("prune", "granularity"), ("recover", "lr"),
            ("recover", "momentum"), ("recover", "method"), ("seed",)]
RUN_EDGES = [0, -1, 1, 2, 0.5, 0.999, 1e30, -1e-30, 2**63, math.nan, math.inf, True, None, "", "sgd", "adam",
             "global", "uniform", "filter", "nm", "l2", "taylor", "random", "distill", "iterative", "gradual"]


def _cheap(recipe) -> bool:
    """At most ~60 optimiser steps per phase on the digits (1,258 training images)."""
    phases = [recipe.train] + ([recipe.recover] if recipe.recover is not None else [])
    return all(p.epochs * -(-1258 // p.batch_size) <= 60 for p in phases)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_cheap_recipe_runs_to_finite_numbers_or_one_error(data, tmp_path_factory):
    """The run itself (only mutations that stay cheap): a clean one-line prunekit error, or a report.json that is
    valid JSON (no NaN/Infinity literals) with finite numbers."""
    import json

    from prunekit.errors import PrunekitError
    from prunekit.pipeline import run_recipe

    mutations = data.draw(st.lists(st.tuples(st.sampled_from(RUN_KEYS), st.sampled_from(RUN_EDGES)),
                                   min_size=1, max_size=2))
    raw = copy.deepcopy(CHEAP)
    for path, value in mutations:
        raw = _mutate(raw, path, "set", value)
    try:
        recipe = parse_recipe(raw, "fuzz", notice=None)
    except RecipeError as e:
        assert len(str(e).splitlines()) == 1, str(e)
        return
    if not _cheap(recipe):
        return
    out = tmp_path_factory.mktemp("run") / "out"
    try:
        run_recipe(recipe, out, progress=False, quiet=True)
    except PrunekitError as e:
        assert len(str(e).splitlines()) == 1, (mutations, str(e))
        assert not out.exists(), "a failed run writes nothing"
        return
    text = (out / "report.json").read_text()
    report = json.loads(text, parse_constant=lambda c: pytest.fail(f"report.json holds {c} ({mutations})"))
    for value in _numbers(report):
        assert math.isfinite(value), mutations
