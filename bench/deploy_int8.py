"""resnet_mini in ONNX Runtime: why static int8 gives so little, variant by variant, timed side by side.

From a kept ``deploy-resnet-int8`` run (``bench/deploy.py --keep DIR``: its ``onnx/dense.onnx`` and the pruned
``onnx/model.onnx``, BatchNorm folded), the pruned model is quantised several ways with ONNX Runtime's tools
(calibration: 512 MNIST training images, min/max, after ``quant_pre_process``) and every file is timed in one loop
(:func:`prunekit.measure.time_runners`, CPU time per forward, 1 thread, each timed call after an untimed one) at
batch 1 and 256; accuracy on the MNIST test split in ONNX Runtime. For each file the graph ONNX Runtime actually runs
(``SessionOptions.optimized_model_filepath``) is read back: how many convolutions run as int8 ``QLinearConv`` and
how many stay fp32 ``Conv``. A second table times single 3×3 convolutions (random weights, ReLU fused, 28×28 /
14×14 / 7×7 maps as in resnet_mini) fp32 vs int8, to show where ONNX Runtime's int8 kernels pay.

    OMP_NUM_THREADS=1 python bench/deploy_int8.py --run /tmp/keep/resnet_mini_s0
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import tempfile
from pathlib import Path

import torch
from _common import render_footer, write_results  # bench/ is sys.path[0] as a script
from torch import nn

from prunekit.data import load_dataset
from prunekit.export import ImageDeploy, export_onnx, ort_session, quantize_onnx
from prunekit.measure import time_runners

#: name → (description, keyword arguments of onnxruntime.quantization.quantize_static, keep the stem fp32)
VARIANTS = {
    "qdq_all": ("static QDQ, u8 activations, s8 per-channel weights, every conv int8 (the previous default)",
                {}, False),
    "qdq_stem_fp32": ("as above, the 1-channel stem conv kept fp32 (prunekit's default now)", {}, True),
    "qoperator": ("QOperator format (QLinearConv written directly), stem fp32", {"quant_format": "QOperator"}, True),
    "per_tensor": ("per-tensor weight scales, stem fp32", {"per_channel": False}, True),
    "reduce_range": ("7-bit weights (reduce_range), stem fp32", {"reduce_range": True}, True),
    "s8s8": ("s8 activations and weights (S8S8), stem fp32", {"activation_type": "QInt8"}, True),
}


def _quantize(src: Path, dst: Path, x: torch.Tensor, kwargs: dict, stem_fp32: bool) -> None:
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from prunekit.export.quantize import narrow_convs

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": x[i:i + 64].numpy()} for i in range(0, len(x), 64)])

        def get_next(self):
            return next(self.it, None)

    args = {"quant_format": q.QuantFormat.QDQ, "per_channel": True, "activation_type": q.QuantType.QUInt8,
            "weight_type": q.QuantType.QInt8, "calibrate_method": q.CalibrationMethod.MinMax}
    for k, v in kwargs.items():
        args[k] = getattr(q.QuantFormat, v) if k == "quant_format" else getattr(q.QuantType, v) if k.endswith(
            "_type") else v
    q.quantize_static(str(pre), str(dst), Reader(), nodes_to_exclude=narrow_convs(pre) if stem_fp32 else [], **args)


def _ops(path: Path) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime runs (all optimisations on, 1 thread)."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    out = path.with_suffix(".optimised.onnx")
    opts.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return dict(collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node))


def _time(files: dict[str, Path], x: torch.Tensor, batches: list[int], repeats: dict[int, int]) -> dict:
    out: dict[str, dict] = {k: {} for k in files}
    for b in batches:
        xb = x[:1].expand(b, *x.shape[1:]).contiguous().numpy()
        runners = {k: functools.partial(ort_session(p).run, None, {"input": xb}) for k, p in files.items()}
        for k, t in time_runners(runners, batch=b, threads=1, repeats=repeats[b]).items():
            out[k][str(b)] = {"cpu_ms": t.cpu_ms, "wall_ms": t.median_ms, "load": t.load_avg}
    return out


def whole_models(run: Path, batches: list[int], repeats: dict[int, int]) -> dict:
    data = load_dataset("mnist")
    with tempfile.TemporaryDirectory() as tmp:
        files = {"dense_fp32": run / "onnx" / "dense.onnx", "pruned_fp32": run / "onnx" / "model.onnx"}
        dense_int8 = Path(tmp) / "dense_int8.onnx"
        quantize_onnx(files["dense_fp32"], dense_int8, "static", calibration=data.x_train[:512])
        files["dense_int8"] = dense_int8
        for name, (_, kwargs, stem) in VARIANTS.items():
            files[name] = Path(tmp) / f"{name}.onnx"
            _quantize(files["pruned_fp32"], files[name], data.x_train[:512], kwargs, stem)
        times = _time(files, data.x_test, batches, repeats)
        evaluator = ImageDeploy(data)
        rows = {k: {"ops": _ops(p), "accuracy": evaluator.onnx_metrics(ort_session(p))["accuracy"],
                    "size_bytes": p.stat().st_size, "latency": times[k]} for k, p in files.items()}
    return rows


def single_convs(batch: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    shapes = [(1, 16, 28), (8, 8, 28), (16, 8, 28), (8, 16, 28), (16, 16, 28), (24, 24, 14), (32, 32, 14),
              (48, 48, 7), (64, 64, 7)]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for cin, cout, hw in shapes:
            m = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU()).eval()
            x = torch.randn(64, cin, hw, hw)
            fp32 = Path(tmp) / f"c{cin}_{cout}_{hw}.onnx"
            export_onnx(m, x[:4], fp32, exporter="torchscript")
            int8 = quantize_onnx(fp32, fp32.with_suffix(".int8.onnx"), "static", calibration=x, keep_fp32=())
            t = _time({"fp32": fp32, "int8": Path(int8.path)}, x, [batch], {batch: repeats})
            macs = cin * cout * 9 * hw * hw * batch
            f, i = t["fp32"][str(batch)]["cpu_ms"], t["int8"][str(batch)]["cpu_ms"]
            out.append({"in": cin, "out": cout, "hw": hw, "batch": batch, "fp32_cpu_ms": f, "int8_cpu_ms": i,
                        "fp32_gmacs": macs / f / 1e6, "int8_gmacs": macs / i / 1e6})
    return out


def render(result: dict) -> str:
    rows = result["models"]
    batches = list(rows["dense_fp32"]["latency"])
    base = rows["dense_fp32"]["latency"]
    cols = " | ".join(f"b{b} CPU ms | b{b} × vs dense fp32" for b in batches)
    out = ["# resnet_mini in ONNX Runtime: static int8 variants, timed side by side", "",
           f"From the kept run `{result['run']}` (`deploy-resnet-int8`, seed {result['seed']}). CPU time per forward "
           "(median), 1 thread, every file timed in one loop; accuracy on the MNIST test split in ONNX Runtime. "
           "`ops`: the convolutions of the graph ONNX Runtime runs after its optimisations (QLinearConv int8, Conv "
           "fp32).", "", f"| variant | accuracy | {cols} | size | ops (int8 / fp32 conv) |",
           "|---|---|" + "---|---|" * len(batches) + "---|---|"]
    desc = {"dense_fp32": "dense fp32", "pruned_fp32": "pruned fp32",
            "dense_int8": "dense, int8 as prunekit quantises (stem fp32)",
            **{k: f"pruned, {v[0]}" for k, v in VARIANTS.items()}}
    for k, r in rows.items():
        cells = []
        for b in batches:
            cpu = r["latency"][b]["cpu_ms"]
            cells += [f"{cpu:.3f}", f"{base[b]['cpu_ms'] / cpu:.2f}×"]
        ops = r["ops"]
        q = ops.get("QLinearConv", 0) + ops.get("NhwcQLinearConv", 0)
        out.append(f"| {desc[k]} | {r['accuracy']:.2%} | {' | '.join(cells)} | {r['size_bytes'] / 1e3:.1f} KB | "
                   f"{q} / {ops.get('Conv', 0)} |")
    conv = result["convs"]
    out += ["", f"## Single 3×3 convolutions (+ReLU), batch {conv[0]['batch']}, fp32 vs static int8 (every conv "
            "int8), ONNX Runtime 1 thread", "",
            "| in → out channels | map | fp32 CPU ms | int8 CPU ms | int8 speed-up | fp32 GMAC/s | int8 GMAC/s |",
            "|---|---|---|---|---|---|---|"]
    for c in conv:
        f, i8 = c["fp32_cpu_ms"], c["int8_cpu_ms"]
        out.append(f"| {c['in']} → {c['out']} | {c['hw']}×{c['hw']} | {f:.3f} | {i8:.3f} | {f / i8:.2f}× | "
                   f"{c['fp32_gmacs']:.1f} | {c['int8_gmacs']:.1f} |")
    return "\n".join(out) + "\n" + render_footer(result)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a kept deploy-resnet-int8 run directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=20, help="timed runs at batch 1 (batch 256: a quarter)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    repeats = {1: args.repeats, 256: max(3, args.repeats // 4)}
    result = {"run": str(args.run), "seed": args.seed, "models": whole_models(args.run, [1, 256], repeats),
              "convs": single_convs(32, args.repeats)}
    write_results("deploy_int8", result, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
