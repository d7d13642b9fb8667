"""How long a shipped structured recipe takes end to end here, and what it delivers.

Runs ``prunekit run RECIPE --seed S [--threads T]`` in a fresh process per seed and records the run's
wall and CPU seconds (and per phase), the load average, the thread choice, the accuracy change, the
MACs reduction and the speed-up at each timed batch size, from its report.json.

    PYTHONPATH=. .venv/bin/python bench/recipe_time.py --recipe structured-resnet-mnist --seeds 0 \
        --name structured_resnet_2x_time
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, render_footer, write_results  # noqa: E402


def run_one(recipe: str, seed: int, threads: int | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "prunekit.cli.main", "run", recipe, "--seed", str(seed), "--out", str(out),
               "--no-progress", *(["--threads", str(threads)] if threads else [])]
        load = os.getloadavg()[0]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        return row(json.loads((out / "report.json").read_text()), load, " ".join(cmd))


def row(r: dict, load: float | None, command: str) -> dict:
    """One results row from a run's report.json."""
    started = load if load is not None else (r.get("threads") or {}).get("load_avg")  # the run's own record
    return {"seed": r["seed"], "command": command, "dense_accuracy": r["dense"]["accuracy"],
            "pruned_accuracy": r["pruned"]["accuracy"],
            "drop_pt": round(r["accuracy_drop_pt"], 2), "macs_reduction": r["macs_reduction"],
            "speedup": r["speedup"],
            "latency_ms": {"dense": r["dense"]["latency_ms"], "pruned": r["pruned"]["latency_ms"]},
            "removed": r["allocation"]["allocation"]["removed"], "timings_s": r["timings_s"],
            "latency_table_clock": (r["allocation"]["allocation"].get("latency_table") or {}).get("clock"),
            "run_time_s": r.get("run_time_s"), "thread_choice": r.get("threads"), "loadavg_start": started,
            "loadavg_end": os.getloadavg()[0] if load is not None else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="structured-resnet-mnist")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=None, help="--threads of each run (default: prunekit's choice)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--name", default="structured_resnet_2x_time")
    ap.add_argument("--from-run", nargs="+", default=[], metavar="DIR",
                    help="collect finished `prunekit run` directories (their report.json) instead of running")
    ap.add_argument("--note", action="append", default=[], help="a note rendered with the results (repeatable)")
    args = ap.parse_args()
    if args.from_run:
        rows = [row(json.loads((Path(d) / "report.json").read_text()), None, f"prunekit run (output {d})")
                for d in args.from_run]
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda s: run_one(args.recipe, s, args.threads), args.seeds))
    write_results(args.name, {"name": args.name, "recipe": args.recipe, "rows": rows, "notes": args.note}, render)


def _num(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def render(res: dict) -> str:
    lines = [f"# {res['name']}: `prunekit run {res['recipe']}` end to end", "",
             "One fresh process per seed. Wall and CPU seconds of the whole run (CPU: all threads of the process); "
             "phases in wall seconds; load = 1-minute load average when the run started / ended (2 cores). Drop = "
             "dense − pruned test accuracy (1,000 images, 1 image = 0.1 pt).", "",
             "| seed | threads | wall s | CPU s | load start/end | train / prune / fine-tune s | drop (pt) | MACs "
             "reduction | speed-up | removed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        t, ph = r.get("run_time_s") or {}, r["timings_s"]
        phases = " / ".join(str(next((ph[k] for k in keys if k in ph), "-"))  # older reports: the old stage names
                            for keys in (("train",), ("prune", "score_allocate_prune"), ("recover", "finetune")))
        sp = ", ".join(f"{v:.2f}× (batch {b})" for b, v in r["speedup"].items())
        lines.append(f"| {r['seed']} | {(r.get('thread_choice') or {}).get('threads', '-')} | {t.get('wall', '-')} | "
                     f"{t.get('cpu', '-')} | {_num(r['loadavg_start'])} / {_num(r['loadavg_end'])} | {phases} | "
                     f"{r['drop_pt']:+.2f} | {r['macs_reduction']:.2f}× | {sp} | "
                     f"{', '.join(f'{g} {n}' for g, n in r['removed'].items() if n)} |")
    return "\n".join(lines) + "\n" + render_footer(res)


if __name__ == "__main__":
    main()
