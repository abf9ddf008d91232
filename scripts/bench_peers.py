#!/usr/bin/env python3
"""cnnkit (ONNX Runtime) against its peers on this machine, one interleaved run, equal precision.

Runners, each labelled with the precision it computes in:
  * ort-default  ONNX Runtime, default session options (fp32)
  * ort-tuned    ONNX Runtime with the best options ``cnnkit bench --tune`` finds per batch size (fp32)
  * litert       LiteRT (ai-edge-litert) with XNNPACK, converted from the same Keras model (fp32)
  * openvino     OpenVINO CPU plugin on the same .onnx, INFERENCE_PRECISION_HINT=f32 (fp32)
  * openvino-bf16  the same with INFERENCE_PRECISION_HINT=bf16 (bf16 compute; reported apart, never
                 compared with fp32 as if equal)
  * tf.function  TensorFlow, ``tf.function`` of ``model(x, training=False)`` (fp32)
Every runner gets the same pre-generated inputs; rounds alternate between runners so that drift on a
shared machine hits all alike, and each turn starts on quiet cores (ONNX Runtime's spinning pool threads
keep a core busy for ~50-100 ms after their session goes idle, which would slow whoever runs next); medians
and p90 come from all kept samples. Targets (issue 4): ort-tuned
beats every fp32 peer at every batch size, and LiteRT by >= 10 % at batch 1.

    python scripts/bench_peers.py MODEL.keras MODEL.onnx [--batch-sizes 1,64,256] [--rounds 8] [--json out.json]

Peers are optional: pip install "cnnkit[bench]" (ai-edge-litert, openvino); a missing one is skipped and said.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cnnkit.bench import BenchConfig, make_input, run_benchmark, time_calls, time_slice  # noqa: E402
from cnnkit.envinfo import cpu_info, environment  # noqa: E402
from cnnkit.onnx_info import describe_onnx  # noqa: E402
from cnnkit.sessions import SessionConfig, create_session  # noqa: E402

Factory = Callable[[int, np.ndarray], Callable[[], object]]


def ort_factory(model: Path, config: SessionConfig) -> Factory:
    def make(batch: int, x: np.ndarray) -> Callable[[], object]:
        session, _ = create_session(model, config)
        feeds = {session.get_inputs()[0].name: x}
        return lambda: session.run(None, feeds)
    return make


def litert_factory(keras_path: Path, threads: int) -> Factory:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from cnnkit.build import load_keras_model

    model = load_keras_model(keras_path)

    def make(batch: int, x: np.ndarray) -> Callable[[], object]:
        # A static shape per batch size, as LiteRT deployments use.
        # Weights frozen into constants: as resource variables they are read at every call and XNNPACK
        # cannot pre-pack them (LiteRT ran ~40x slower that way here).
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        fn = tf.function(lambda t: model(t, training=False), input_signature=[tf.TensorSpec(x.shape, tf.float32)])
        frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        interp = Interpreter(model_content=converter.convert(), num_threads=threads)  # fp32; XNNPACK by default
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

        def run() -> object:
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            return interp.get_tensor(out["index"])
        return run
    return make


def openvino_factory(onnx_path: Path, precision: str, threads: int) -> Factory:
    import openvino as ov

    core = ov.Core()

    def make(batch: int, x: np.ndarray) -> Callable[[], object]:
        model = core.read_model(str(onnx_path))
        model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        return lambda: request.infer({0: x})
    return make


def tf_function_factory(keras_path: Path) -> Factory:
    import tensorflow as tf

    from cnnkit.build import load_keras_model

    model = load_keras_model(keras_path)

    def make(batch: int, x: np.ndarray) -> Callable[[], object]:
        fn = tf.function(lambda t: model(t, training=False), input_signature=[tf.TensorSpec(x.shape, tf.float32)])
        tx = tf.constant(x)
        return lambda: fn(tx).numpy()
    return make


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("keras", type=Path)
    ap.add_argument("onnx", type=Path)
    ap.add_argument("--batch-sizes", default="1,64,256")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--round-time", type=float, default=0.25, help="seconds per runner per round")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    cores = cpu_info()["usable_cores"] or 1
    info = describe_onnx(args.onnx)

    print("tuning ONNX Runtime (cnnkit bench --tune) ...", flush=True)
    tuned = run_benchmark(BenchConfig(models=(args.onnx,), batch_sizes=tuple(batches), tune=True, min_time_s=0.3))
    best_by_batch: dict[int, SessionConfig] = {}
    for b in batches:
        best_by_batch[b] = SessionConfig.from_dict(tuned.chosen_trial(str(args.onnx), b).options)

    runners: dict[str, tuple[str, Callable[[int], Factory] | Factory]] = {
        "ort-default": ("fp32", ort_factory(args.onnx, SessionConfig())),
    }
    skipped = []
    peers: list[tuple[str, str, Callable[[], Factory]]] = [
        ("litert", "fp32", lambda: litert_factory(args.keras, cores)),
        ("litert-1thread", "fp32", lambda: litert_factory(args.keras, 1)),
        ("openvino", "fp32", lambda: openvino_factory(args.onnx, "f32", cores)),
        ("openvino-bf16", "bf16", lambda: openvino_factory(args.onnx, "bf16", cores)),
        ("tf.function", "fp32", lambda: tf_function_factory(args.keras)),
    ]
    for name, precision, build in peers:
        try:
            runners[name] = (precision, build())
        except Exception as exc:  # noqa: BLE001 (an optional peer that is not installed or fails to convert)
            skipped.append(f"{name}: {type(exc).__name__}: {exc}"[:200])

    results: dict[int, dict[str, dict[str, float]]] = {}
    for b in batches:
        x = make_input(info, b, 0).astype(np.float32)
        calls = {name: factory(b, x) for name, (_, factory) in runners.items()}
        calls["ort-tuned"] = ort_factory(args.onnx, best_by_batch[b])(b, x)
        samples: dict[str, list[int]] = {name: [] for name in calls}
        for name, call in calls.items():
            time_calls(call, warmup=20, min_iterations=1, min_time_s=0.0)  # warm up this shape
        order = list(calls)
        for _ in range(args.rounds):
            random.shuffle(order)
            for name in order:
                samples[name] += time_slice(calls[name], min_iterations=3, min_time_s=args.round_time)
        results[b] = {name: {"p50_ms": float(np.median(s)) / 1e6, "p90_ms": float(np.percentile(s, 90)) / 1e6,
                             "count": len(s)} for name, s in samples.items()}

    precision = {name: p for name, (p, _) in runners.items()} | {"ort-tuned": "fp32"}
    names = ["ort-tuned", "ort-default"] + [n for n in runners if n != "ort-default"]
    print(f"\n{cpu_info()['model']}, {cores} cores; interleaved, {args.rounds} rounds x {args.round_time} s per runner per batch")
    print(f"{'batch':>5}  " + "  ".join(f"{n + ' (' + precision[n] + ')':>22}" for n in names))
    for b in batches:
        print(f"{b:>5}  " + "  ".join(f"{results[b][n]['p50_ms']:>19.4f} ms" for n in names))
    print("\ntargets (fp32 peers only; bf16 is a different precision and is not compared as equal):")
    all_met = True
    for b in batches:
        ours = results[b]["ort-tuned"]["p50_ms"]
        for n in names:
            if n.startswith("ort") or precision[n] != "fp32":
                continue
            need = 0.9 if (b == 1 and n.startswith("litert")) else 1.0
            met = ours <= need * results[b][n]["p50_ms"]
            all_met &= met
            print(f"  batch {b:>3}: ort-tuned {ours:.4f} ms vs {n} {results[b][n]['p50_ms']:.4f} ms "
                  f"(need <= {need:.0%} of it): {'met' if met else 'NOT MET'}")
    for s in skipped:
        print(f"skipped {s}")
    print("ALL TARGETS MET" if all_met else "SOME TARGETS NOT MET")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "precision": precision, "skipped": skipped,
                                         "tuned_options": {b: best_by_batch[b].to_dict() for b in batches},
                                         "environment": environment()}, indent=2))


if __name__ == "__main__":
    main()
