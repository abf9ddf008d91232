#!/usr/bin/env python3
"""Why is (or isn't) INT8 faster than FP32 in ONNX Runtime on this CPU? Evidence, not assumptions.

For the FP32 model and its INT8 variants (static QDQ u8s8 and s8s8, static QOperator, dynamic):
  1. the graph ONNX Runtime actually runs (ORT_ENABLE_ALL, saved with optimized_model_filepath): do the
     Q/DQ pairs fuse into QLinearConv / QGemm, or do DequantizeLinear -> float Conv remain?
  2. ONNX Runtime's profiler at a large batch: which kernels take the time;
  3. a GEMM microbenchmark (M=N=K=1024): fp32 MatMul against int8 MatMulInteger (u8 x s8) and
     QLinearMatMul, in GOPS, against what VNNI/AMX-class int8 would give;
  4. latency of every variant, interleaved and unprofiled, beside OpenVINO FP32 and BF16 on the same FP32
     model (the speed target; if openvino is installed).

    python scripts/quant_evidence.py MODEL.onnx --data-dir DIR [--batch-size 64] [--out reports/quant-evidence]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from cnnkit.choices import ActivationType, QuantFormat, QuantMode
from cnnkit.data.datasets import load_dataset
from cnnkit.envinfo import environment
from cnnkit.quantize.config import QuantizeConfig
from cnnkit.quantize.loop import quantize_model


def optimized_ops(model: Path, work: Path) -> dict[str, int]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(work / f"{model.stem}.opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(so.optimized_model_filepath)
    return dict(collections.Counter(f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in opt.graph.node))


def profile(model: Path, batch: int, runs: int = 30) -> tuple[float, list[tuple[str, float]]]:
    """ms per profiled run and the top operator types' kernel ms per run (cnnkit's profiler reading)."""
    from cnnkit.bench.profile import profile_model
    from cnnkit.runtimes.sessions import SessionConfig

    inp = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0]
    x = np.random.default_rng(0).integers(0, 256, (batch, *inp.shape[1:])).astype(np.float32)
    prof = profile_model(model, SessionConfig(), x, inp.name, runs=runs, warmup=5)
    return prof.run_ms, [(t.op_type, t.us / 1e3) for t in prof.by_type[:8]]


def _gemm_model(kind: str, n: int) -> bytes:
    f32, u8, i8 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8
    rng = np.random.default_rng(0)
    if kind == "fp32 MatMul":
        w = helper.make_tensor("w", f32, [n, n], rng.standard_normal(n * n).astype(np.float32).tobytes(), raw=True)
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        ins, out, inits = [helper.make_tensor_value_info("a", f32, [n, n])], helper.make_tensor_value_info("y", f32, [n, n]), [w]
    elif kind == "int8 MatMulInteger (u8 x s8)":
        w = helper.make_tensor("w", i8, [n, n], rng.integers(-127, 127, n * n).astype(np.int8).tobytes(), raw=True)
        node = helper.make_node("MatMulInteger", ["a", "w"], ["y"])
        ins, out, inits = [helper.make_tensor_value_info("a", u8, [n, n])], helper.make_tensor_value_info("y", TensorProto.INT32, [n, n]), [w]
    else:  # QLinearMatMul
        w = helper.make_tensor("w", i8, [n, n], rng.integers(-127, 127, n * n).astype(np.int8).tobytes(), raw=True)
        consts = [helper.make_tensor("as", f32, [], [0.02]), helper.make_tensor("az", u8, [], [128]),
                  helper.make_tensor("ws", f32, [], [0.01]), helper.make_tensor("wz", i8, [], [0]),
                  helper.make_tensor("ys", f32, [], [0.5]), helper.make_tensor("yz", u8, [], [128])]
        node = helper.make_node("QLinearMatMul", ["a", "as", "az", "w", "ws", "wz", "ys", "yz"], ["y"])
        ins, out, inits = [helper.make_tensor_value_info("a", u8, [n, n])], helper.make_tensor_value_info("y", u8, [n, n]), [w, *consts]
    graph = helper.make_graph([node], "gemm", ins, [out], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def gemm_gops(kind: str, n: int = 1024, threads: int = 1) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(_gemm_model(kind, n), so, providers=["CPUExecutionProvider"])
    dtype = np.float32 if kind.startswith("fp32") else np.uint8
    a = np.random.default_rng(1).integers(0, 255, (n, n)).astype(dtype)
    for _ in range(3):
        s.run(None, {"a": a})
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        s.run(None, {"a": a})
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times)) / 1e9


def interleaved_latency(variants: dict[str, Path], fp32: Path, batches: tuple[int, ...], rounds: int = 6,
                        round_time: float = 0.3) -> dict[int, dict[str, float]]:
    """p50 per runner per batch: ORT (default session options) for every variant, OpenVINO FP32 and BF16."""
    import random

    from cnnkit.bench.timing import time_calls, time_slice

    out: dict[int, dict[str, float]] = {}
    for b in batches:
        x = np.random.default_rng(0).integers(0, 256, (b, 28, 28, 1)).astype(np.float32)
        calls = {}
        for name, path in variants.items():
            s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            calls[f"ort-{name}"] = (lambda s=s: s.run(None, {s.get_inputs()[0].name: x}))
        try:
            import openvino as ov

            core = ov.Core()
            for label, hint in (("openvino-fp32", "f32"), ("openvino-bf16", "bf16")):
                m = core.read_model(str(fp32))
                m.reshape({m.inputs[0].get_any_name(): list(x.shape)})
                req = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
                calls[label] = (lambda req=req: req.infer({0: x}))
        except ImportError:
            pass
        samples: dict[str, list[int]] = {k: [] for k in calls}
        for call in calls.values():
            time_calls(call, warmup=10, min_iterations=1, min_time_s=0.0)
        order = list(calls)
        for _ in range(rounds):
            random.shuffle(order)
            for k in order:
                samples[k] += time_slice(calls[k], min_iterations=3, min_time_s=round_time)
        out[b] = {k: float(np.median(v)) / 1e6 for k, v in samples.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--dataset")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("reports/quant-evidence"))
    args = ap.parse_args()
    dataset = load_dataset(args.dataset, args.data_dir)
    lines: list[str] = []
    say = lambda s="": (print(s), lines.append(s))  # noqa: E731
    evidence: dict[str, object] = {"environment": environment()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        variants = {"fp32": args.model}
        for name, mode, fmt, act in (("static-qdq-u8s8", QuantMode.STATIC, QuantFormat.QDQ, ActivationType.UINT8),
                                     ("static-qdq-s8s8", QuantMode.STATIC, QuantFormat.QDQ, ActivationType.INT8),
                                     ("static-qoperator-u8s8", QuantMode.STATIC, QuantFormat.QOPERATOR, ActivationType.UINT8),
                                     ("dynamic-int8", QuantMode.DYNAMIC, QuantFormat.QDQ, ActivationType.UINT8)):
            out = work / f"{name}.onnx"
            quantize_model(QuantizeConfig(args.model, out, mode=mode, format=fmt, activation_type=act,
                                          max_accuracy_drop=100.0, max_attempts=0, eval_samples=500), dataset)
            variants[name] = out
        say(f"# INT8 evidence for {args.model.name} (batch {args.batch_size})")
        say()
        say("## 1. What ONNX Runtime runs (optimised graph, ORT_ENABLE_ALL)")
        graphs = {}
        for name, path in variants.items():
            graphs[name] = optimized_ops(path, work)
            say(f"- {name}: " + ", ".join(f"{op} x{n}" for op, n in sorted(graphs[name].items())))
        say()
        say(f"## 2. Profiler at batch {args.batch_size}: share of kernel time (the profiler slows runs; shares only)")
        prof = {}
        for name, path in variants.items():
            per_run, top = profile(path, args.batch_size)
            prof[name] = {"ms_per_run": per_run, "top": top}
            kernel_total = sum(ms for _, ms in top) or 1.0
            say(f"- {name}: " + ", ".join(f"{op} {100 * ms / kernel_total:.0f} %" for op, ms in top[:5]))
        say()
        say("## 3. GEMM 1024^3 on one thread (GOPS)")
        gemm = {k: gemm_gops(k) for k in ("fp32 MatMul", "int8 MatMulInteger (u8 x s8)", "int8 QLinearMatMul (u8 x s8)")}
        for k, v in gemm.items():
            say(f"- {k}: {v:.0f} GOPS")
        ratio = gemm["int8 MatMulInteger (u8 x s8)"] / gemm["fp32 MatMul"]
        say(f"- int8/fp32 = {ratio:.2f}x (AVX-512 VNNI gives about 4x fp32 FMA throughput in theory; AMX int8 more)")
        say()
        say("## 4. Latency, interleaved rounds, no profiler (p50 ms); the target is OpenVINO BF16")
        latency = interleaved_latency(variants, args.model, (64, 256))
        for b, row in latency.items():
            say(f"- batch {b}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
        evidence |= {"optimized_graph_ops": graphs, "profile": prof, "gemm_gops": gemm, "latency_p50_ms": latency}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(evidence, indent=2, default=str))
    print(f"\nwrote {args.out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
