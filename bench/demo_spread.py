"""The demo's headline on several seeds and thread counts: does −0.20 pt hold, and does the thread count matter?

Runs the shipped demo recipe (``prunekit run demo --seed S --threads T``) once per seed × thread count,
each in a fresh process (so ``prunekit.measure.threads.configure`` sets MKL's reproducible mode before
MKL's first product), and records each run's dense and pruned test accuracy, sparsity, the masks'
hash and the run's wall and CPU time. ``--mkl-cbwr AUTO`` reproduces the runs before that mode (MKL
free to split products by thread).

    PYTHONPATH=. .venv/bin/python bench/demo_spread.py --seeds 0 1 2 --threads 1 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, render_footer, write_results  # noqa: E402


def masks_hash(out: Path) -> str:
    """SHA-256 of which weights are zero in the saved pruned model (equal hashes: equal masks)."""
    from safetensors.torch import load_file

    tensors = load_file(str(out / "model.safetensors"))
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update((tensors[name] == 0).numpy().tobytes())
    return h.hexdigest()[:16]


def run_one(seed: int, threads: int, mkl_cbwr: str | None, recipe: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)  # --threads decides
    if mkl_cbwr is None:
        env.pop("MKL_CBWR", None)
    else:
        env["MKL_CBWR"] = mkl_cbwr
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "prunekit.cli.main", "run", recipe, "--seed", str(seed), "--threads",
               str(threads), "--out", str(out), "--no-progress"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        r = json.loads((out / "report.json").read_text())
        mask = masks_hash(out)
    return {"seed": seed, "threads": threads, "dense_accuracy": r["dense"]["accuracy"],
            "pruned_accuracy": r["pruned"]["accuracy"], "delta_pt": round(-r["accuracy_drop_pt"], 2),
            "sparsity": r["sparsity"], "compression": r["compression"], "masks_sha256": mask,
            "thread_choice": r.get("threads"), "run_time_s": r.get("run_time_s")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--mkl-cbwr", default=None, help="MKL_CBWR for the runs (default: prunekit's choice)")
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--name", default="demo_spread")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--note", action="append", default=[], help="a note rendered with the results (repeatable)")
    args = ap.parse_args()
    cases = [(seed, t) for seed in args.seeds for t in args.threads]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda c: run_one(c[0], c[1], args.mkl_cbwr, args.recipe), cases))
    for row in rows:
        print(json.dumps(row), flush=True)
    write_results(args.name, {"name": args.name, "recipe": args.recipe, "notes": args.note,
                              "mkl_cbwr": args.mkl_cbwr or "prunekit default",
                              "rows": rows}, render)


def render(res: dict) -> str:
    rows = res["rows"]
    seeds = sorted({r["seed"] for r in rows})
    threads = sorted({r["threads"] for r in rows})
    lines = [f"# {res['name']}: the demo recipe on seeds {seeds} × threads {threads}", "",
             f"Recipe `{res['recipe']}` (`prunekit run {res['recipe']} --seed S --threads T`), one fresh process per "
             f"run; MKL_CBWR: {res['mkl_cbwr']}. Test split: 1,000 images (1 image = 0.1 pt). Δ = pruned − dense "
             "test accuracy in points (as the demo prints it).", "",
             "| seed | threads | dense acc. | pruned acc. | Δ (pt) | sparsity | masks (sha256) | wall s | CPU s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r.get("run_time_s") or {}
        lines.append(f"| {r['seed']} | {r['threads']} | {r['dense_accuracy']:.2%} | {r['pruned_accuracy']:.2%} | "
                     f"{r['delta_pt']:+.2f} | {r['sparsity']:.2%} | `{r['masks_sha256']}` | {t.get('wall', '-')} | "
                     f"{t.get('cpu', '-')} |")
    deltas = [r["delta_pt"] for r in rows]
    same = all(len({(r["masks_sha256"], r["pruned_accuracy"]) for r in rows if r["seed"] == s}) == 1 for s in seeds)
    lines += ["", f"Δ over all runs: mean {statistics.mean(deltas):+.2f} pt, min {min(deltas):+.2f}, max "
              f"{max(deltas):+.2f}. Same masks and accuracy at every thread count for each seed: "
              f"{'yes' if same else 'no'}."]
    return "\n".join(lines) + "\n" + render_footer(res)


if __name__ == "__main__":
    main()
