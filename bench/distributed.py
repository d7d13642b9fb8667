"""Fine-tuning throughput on 1 and 2 processes, and what checkpoints and resuming cost.

1. Throughput: ``prunekit.training.train`` of a model (fine-tuning settings) timed on rank 0 between two
   barriers: one plain process, then torchrun with 1 and with N processes (gloo on CPU, one thread each).
   Samples per second of wall time, and CPU seconds. On this 2-core machine shared with other engineers, two
   processes compete with everything else for the same two cores: the load average is recorded beside it.
2. Checkpoints: a recipe run end to end with ``--checkpoint epoch`` (the default) and ``--checkpoint off``;
   the report's ``checkpoint.seconds`` (time spent writing them) over its run time.
3. Resume: the same run killed with SIGKILL after ``--kill-after`` training phases, then ``--resume``; its wall
   time beside the uninterrupted run's, and whether the report numbers (latency aside) and weights are equal.

    PYTHONPATH=. .venv/bin/python bench/distributed.py --nproc 2 --recipe demo
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, render_footer, write_results  # noqa: E402

UNTIMED = ("timings_s", "run_time_s", "threads", "checkpoint", "speedup")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def worker(args: argparse.Namespace) -> None:
    """One rank of the throughput measurement (run by torchrun, or alone)."""
    import torch
    import torch.distributed as dist

    from prunekit.data import load_dataset
    from prunekit.models import build_model
    from prunekit.training import TrainConfig, distributed, train

    distributed.init_from_env()
    data = load_dataset(args.data)
    torch.manual_seed(0)
    model = build_model(args.model, data.input_shape, data.num_classes)
    cfg = TrainConfig(epochs=args.epochs, lr=0.01, batch_size=args.batch)
    if dist.is_initialized():
        dist.barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    train(model, data, cfg, seed=0, progress=False)
    if dist.is_initialized():
        dist.barrier()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if distributed.rank() == 0:
        samples = len(data.x_train) * args.epochs
        Path(args.json).write_text(json.dumps({"wall_s": wall, "cpu_s_rank0": cpu, "samples": samples,
                                               "samples_per_s": samples / wall}))
    distributed.shutdown()


def throughput(args: argparse.Namespace, tmp: Path) -> list[dict]:
    rows = []
    for model in args.models:
        rows += _throughput(args, tmp, model)
    return rows


def _throughput(args: argparse.Namespace, tmp: Path, model: str) -> list[dict]:
    rows = []
    base = [__file__, "--worker", "--model", model, "--data", args.data, "--epochs", str(args.epochs),
            "--batch", str(args.batch)]
    for label, nproc in (("1 process", None), (f"torchrun, {args.nproc} processes", args.nproc)):
        out = tmp / f"tp{model}{nproc}.json"
        launch = [] if nproc is None else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        load = os.getloadavg()[0]
        subprocess.run([sys.executable, *launch, *base, "--json", str(out)], env=_env(), check=True, cwd=REPO)
        rows.append({"model": model, "setup": label, "processes": nproc or 1, "load_start": round(load, 2),
                     **json.loads(out.read_text())})
    return rows


def _prunekit(args: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prunekit", *args], env=_env(), check=True, cwd=cwd,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _numbers(out: Path) -> dict:
    rep = json.loads((out / "report.json").read_text())
    for side in ("dense", "pruned"):
        rep[side] = {k: v for k, v in rep[side].items() if not k.startswith("latency")}
    return {k: v for k, v in rep.items() if k not in UNTIMED}


def checkpoints_and_resume(args: argparse.Namespace, tmp: Path) -> dict:
    base = ["run", args.recipe, "--no-progress", "--threads", "1"]
    runs = {}
    for every in ("off", "epoch"):
        wall = _prunekit([*base, "--out", f"ck-{every}", "--checkpoint", every], tmp)
        rep = json.loads((tmp / f"ck-{every}" / "report.json").read_text())
        runs[every] = {"wall_s": round(wall, 2), "run_time_s": rep["run_time_s"], "checkpoint": rep["checkpoint"]}
    # killed after --kill-after finished training phases (the journal's index says when), then resumed
    proc = subprocess.Popen([sys.executable, "-m", "prunekit", *base, "--out", "killed"], env=_env(), cwd=tmp,
                            stdout=subprocess.DEVNULL)
    t = time.perf_counter()
    while proc.poll() is None:
        index = list(tmp.glob(".killed.staging-*/.checkpoint/state.json"))
        try:
            done = len(json.loads(index[0].read_text())["done"]) if index else 0
        except (json.JSONDecodeError, OSError):
            done = 0
        if done >= args.kill_after:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before_kill = time.perf_counter() - t
    resumed = _prunekit([*base, "--out", "killed", "--resume"], tmp)
    same_numbers = _numbers(tmp / "killed") == _numbers(tmp / "ck-epoch")
    same_weights = (tmp / "killed" / "model.safetensors").read_bytes() == \
        (tmp / "ck-epoch" / "model.safetensors").read_bytes()
    resume = {"killed_after_phases": args.kill_after, "wall_before_kill_s": round(before_kill, 2),
              "wall_resumed_s": round(resumed, 2), "same_report_numbers": same_numbers, "same_weights": same_weights}
    return {"runs": runs, "resume": resume}


def render(result: dict) -> str:
    a = result["args"]
    lines = ["# Distributed fine-tuning and resumable runs", "",
             f"## Fine-tuning throughput on `{a['data']}`, {a['epochs']} epochs, global batch {a['batch']}", "",
             "| model | setup | processes | wall s | samples/s | rank 0 CPU s | load at start |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in result["throughput"]:
        lines.append(f"| `{r['model']}` | {r['setup']} | {r['processes']} | {r['wall_s']:.1f} | "
                     f"{r['samples_per_s']:.0f} | {r['cpu_s_rank0']:.1f} | {r['load_start']:.1f} |")
    ck = result["checkpoints"]
    runs, res = ck["runs"], ck["resume"]
    on, off = runs["epoch"], runs["off"]
    share = on["checkpoint"]["seconds"] / on["run_time_s"]["wall"]
    lines += ["", f"## Checkpoints and resume: `prunekit run {a['recipe']}` (1 thread)", "",
              "| checkpoint | run wall s (report) | seconds writing checkpoints | share of the run |",
              "|---|---:|---:|---:|",
              f"| epoch (default) | {on['run_time_s']['wall']:.1f} | {on['checkpoint']['seconds']:.2f} | "
              f"{share:.1%} |",
              f"| off | {off['run_time_s']['wall']:.1f} | {off['checkpoint']['seconds']:.2f} | – |", "",
              f"Killed with SIGKILL after {res['killed_after_phases']} finished training phase(s) "
              f"({res['wall_before_kill_s']:.1f} s), then `--resume`: {res['wall_resumed_s']:.1f} s (the "
              f"uninterrupted run: {on['run_time_s']['wall']:.1f} s in its report, {on['wall_s']:.1f} s with "
              f"interpreter start); same report numbers (latency aside): {res['same_report_numbers']}; same weights "
              f"(bytes): {res['same_weights']}."]
    return "\n".join(lines) + "\n" + render_footer(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="resnet_mini", help=argparse.SUPPRESS)  # the worker's
    ap.add_argument("--models", nargs="+", default=["resnet_mini", "lenet300"])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--kill-after", type=int, default=3, help="training phases finished before the SIGKILL")
    ap.add_argument("--name", default="distributed")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result = {"args": {k: v for k, v in vars(args).items() if k not in ("worker", "json", "model")},
                  "throughput": throughput(args, tmp), "checkpoints": checkpoints_and_resume(args, tmp)}
    write_results(args.name, result, render)


if __name__ == "__main__":
    main()
