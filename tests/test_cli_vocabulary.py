"""The CLI speaks the library's words (issue 11) and fails cleanly, in JSON too (issue 16)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import prunekit
from prunekit.cli._flags import DEPRECATED_FLAGS
from prunekit.cli.main import build_parser, main
from prunekit.importance import names

ROOT = Path(__file__).resolve().parent.parent


def _help(*argv: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return re.sub(r"\s+", " ", capsys.readouterr().out)


def test_docs_use_the_new_flags() -> None:
    build_parser()  # registers the aliases
    assert {"--ratio", "--criterion", "--scope", "--strategy", "--target"} <= set(DEPRECATED_FLAGS)
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for i, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip().startswith("prunekit "):
                old = [f for f in DEPRECATED_FLAGS if re.search(rf"{f}(\s|=|$)", line)]
                assert not old, f"{page.relative_to(ROOT)}:{i} uses {old}: write {[DEPRECATED_FLAGS[f] for f in old]}"


@pytest.mark.parametrize(("argv", "dest", "value"), [
    (["check", "m", "--ratio", "0.3"], "sparsity", 0.3),
    (["check", "m", "--criterion", "fpgm"], "importance", "fpgm"),
    (["sensitivity", "--out", "o", "--criterion", "taylor"], "importance", "taylor"),
    (["run", "x.yaml", "--out", "o", "--strategy", "global"], "allocation", "global"),
])
def test_old_spellings_still_read_with_one_line_notice(argv, dest, value, capsys) -> None:
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deprecated" in err[0] and DEPRECATED_FLAGS[argv[-2]] in err[0]


def test_help_lists_the_registry_and_hides_old_flags(capsys) -> None:
    run_help = _help("run", capsys=capsys)
    for name in prunekit.list_criteria("group") + prunekit.list_criteria("weight"):
        assert name in run_help
    assert " lp" not in run_help and "--criterion" not in run_help and "--strategy" not in run_help
    check_help = _help("check", "m", capsys=capsys)
    assert all(n in check_help for n in names(kind="group", data_free=True))
    assert "--sparsity" in check_help and "--ratio" not in check_help and "--scope" not in check_help
    sens_help = _help("sensitivity", capsys=capsys)
    assert "--importance" in sens_help and "--criterion" not in sens_help


def test_top_level_help_percent_not_garbled(capsys) -> None:
    top = _help(capsys=capsys)
    demo = _help("demo", capsys=capsys)
    assert "92% sparsity" in top and "92% sparsity" in demo and "%%" not in top + demo


def _json_line(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(("flags", "named"), [
    (["--batch", "0"], "--batch"), (["--batch", "-2"], "--batch"),
    (["--image-size", "0"], "--image-size"), (["--image-size", "-5"], "--image-size"),
    (["--sparsity", "1.5"], "--sparsity"), (["--importance", "taylor"], "--importance"),
])
def test_check_bad_values_refused_one_line_and_json(flags, named, capsys) -> None:
    assert main(["check", "torchvision:resnet18", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]
    assert main(["check", "torchvision:resnet18", *flags, "--json"]) == 2
    rec = _json_line(capsys.readouterr().out)
    assert rec["ok"] is False and named in rec["error"] and rec["model"] == "torchvision:resnet18"


def test_check_json_on_bad_model_and_unparsable_value(capsys) -> None:
    assert main(["check", "no_such_package_xyz:factory", "--json", "--no-latency"]) == 2
    rec = _json_line(capsys.readouterr().out)
    assert rec["ok"] is False and "no_such_package_xyz" in rec["error"]
    with pytest.raises(SystemExit):
        main(["check", "torchvision:resnet18", "--sparsity", "abc", "--json"])
    rec = _json_line(capsys.readouterr().out)
    assert rec["ok"] is False and "--sparsity" in rec["error"] and "abc" in rec["error"]
