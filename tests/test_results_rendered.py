"""Published figures come from committed JSON: every results page and the README's benchmark table are the
render of their JSON (so a hand edit fails), every results JSON says how it was measured, and the README's
quoted figures match the files its rows cite. Tests do not import bench/: they run its script or read data."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- results-table:start", "<!-- results-table:end -->"


def _render(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "bench" / "render.py"), "--check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_every_results_page_and_the_readme_table_are_the_render_of_their_json():
    run = _render()
    assert run.returncode == 0, (f"stale or hand-edited page(s), or a bench script that no longer imports: run "
                                 f"`python bench/render.py`\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}")


def test_a_hand_edited_readme_figure_fails_the_check(tmp_path):
    text = (ROOT / "README.md").read_text()
    table = text[text.index(START):text.index(END)]
    edited = table.replace("0.35 over the", "0.30 over the", 1)  # engine_speed's median ratio
    assert edited != table
    readme = tmp_path / "README.md"
    readme.write_text(text.replace(table, edited))
    run = _render("--readme", str(readme))
    assert run.returncode == 1 and "0.30 over the" in run.stdout and "0.35 over the" in run.stdout


def test_every_results_page_has_its_json_and_every_json_its_provenance():
    pages = sorted(RESULTS.rglob("*.md"))
    assert len(pages) >= 30
    assert not [p for p in pages if not p.with_suffix(".json").exists()]
    for path in sorted(RESULTS.rglob("*.json")):
        p = json.loads(path.read_text())["provenance"]
        assert re.fullmatch(r"[0-9a-f]{40}", p["commit"]) and p["date"], path
        if not p["reconstructed"]:  # measured with provenance: every field recorded
            for key in ("command", "torch", "python", "cpu", "threads", "loadavg_start", "loadavg_end", "dirty"):
                assert p[key] is not None, (path, key)


def _readme_rows() -> dict[str, tuple[str, list[str]]]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index(START):text.index(END)].splitlines()[3:]  # marker, header, rule
    rows = {}
    for line in table:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0]] = (cells[2], re.findall(r"`([^`]+\.json)`", cells[3]))
    return rows


def test_every_readme_row_cites_committed_json():
    rows = _readme_rows()
    assert len(rows) >= 9
    for name, (_, sources) in rows.items():
        assert sources and all((RESULTS / s).exists() for s in sources), name


def _cited(row: str, name: str) -> dict:
    headline, sources = _readme_rows()[row]
    assert name in sources, f"the README row {row!r} does not cite {name}"
    return json.loads((RESULTS / name).read_text())


def test_readme_figures_match_the_json_they_cite():
    """Recomputes a figure of each row from the cited JSON, independently of bench/_readme.py."""
    rows = _readme_rows()
    han = _cited("Han et al. 2015 Table 1", "han.json")["rows"]
    d = [r["test_accuracy"] - r["dense_accuracy"] for r in han
         if (r["model"], r["compression_target"], r["criterion"]) == ("lenet300", 12, "l1")]
    assert f"12×: −{-100 * statistics.mean(d):.2f} pt" in rows["Han et al. 2015 Table 1"][0]
    speed = _cited("engine speed vs Torch-Pruning", "engine_speed.json")["summary"]
    assert f"{speed['median_ratio']:.2f} over the {speed['both_ok']} models" in rows["engine speed vs Torch-Pruning"][0]
    cov = _cited("structured coverage", "coverage.json")["results"]
    ok = [r.get("ok") for rs in cov.values() for r in rs]
    assert f"{sum(map(bool, ok))} / {len(ok)} listed models" in rows["structured coverage"][0]
    wc = _cited("single-weight criteria", "weight_criteria.json")["rows"]
    l1 = statistics.mean(r["accuracy_finetuned"] for r in wc
                         if (r["model"], r["criterion"], r["target"]) == ("lenet300", "l1", 0.9))
    assert f"l1 {100 * l1:.2f}" in rows["single-weight criteria"][0]
    pts = _cited("criteria × allocation", "allocation_cap_resnet_bn.json")["points"]
    acc = lambda s: {p["seed"]: p["accuracy"] for p in pts if p["strategy"] == s and p["reduction_target"] == 4.0}
    a, u = acc("sensitivity+bn"), acc("uniform")
    per_seed = " / ".join(f"{100 * (a[k] - u[k]):+.2f}" for k in sorted(a))
    assert f"per seed {per_seed}" in rows["criteria × allocation"][0]


def test_a_benchmark_run_records_its_provenance_and_renders_its_page(tmp_path):
    """Runs a tiny conv_layout benchmark in a copy of bench/ (the committed results stay untouched)."""
    bench = tmp_path / "bench"
    (bench / "results").mkdir(parents=True)
    for script in (ROOT / "bench").glob("*.py"):
        (bench / script.name).write_text(script.read_text())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["--channels", "8", "--repeats", "1", "--size", "8", "--batch", "2"]
    subprocess.run([sys.executable, "bench/conv_layout.py", *args], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=300)
    result = json.loads((bench / "results" / "conv_layout.json").read_text())
    p = result["provenance"]
    assert p["command"] == "python bench/conv_layout.py " + " ".join(args) and p["argv"] == args
    assert p["threads"] == 1 and p["reconstructed"] is False and p["torch"] and p["python"] and p["date"]
    assert len(p["loadavg_start"]) == 3 and len(p["loadavg_end"]) == 3
    assert p["commit"] is None  # the copy is not a git checkout: said so, not guessed
    page = (bench / "results" / "conv_layout.md").read_text()
    assert "| 8 → 8 |" in page and "Command `python bench/conv_layout.py --channels 8" in page
    check = subprocess.run([sys.executable, "bench/render.py", "--check", "--no-readme"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "1 files checked" in check.stdout, check.stdout + check.stderr
