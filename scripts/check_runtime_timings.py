#!/usr/bin/env python3
"""An independent check of a ``cnnkit bench --runtime ...`` result: re-time every row with the runtimes' own
APIs and no cnnkit code in the loop (``InferenceSession.run``, OpenVINO ``compile_model().create_infer_request()
.infer``, the LiteRT ``Interpreter``), interleaved in rounds, and print both medians side by side.

    python scripts/check_runtime_timings.py BENCH.json [--rounds 8] [--round-time 0.2]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

import numpy as np
import onnx


def ort_call(case: dict, x: np.ndarray) -> Callable[[], object]:
    import onnxruntime as ort

    opts = case["provider"]["options"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(opts.get("intra_op_threads") or 0)
    so.inter_op_num_threads = int(opts.get("inter_op_threads") or 0)
    if opts.get("allow_spinning") is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts["allow_spinning"] else "0")
    if opts.get("graph_optimization") == "extended":
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if opts.get("execution_mode") == "parallel":
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    session = ort.InferenceSession(case["model"], so, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feeds)


def openvino_call(case: dict, x: np.ndarray) -> Callable[[], object]:
    import openvino as ov

    opts = case["provider"]["options"]
    core = ov.Core()
    model = core.read_model(case["model"])
    model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
    config = {"INFERENCE_PRECISION_HINT": opts["INFERENCE_PRECISION_HINT"], "PERFORMANCE_HINT": "LATENCY"}
    if "INFERENCE_NUM_THREADS" in opts:
        config["INFERENCE_NUM_THREADS"] = int(opts["INFERENCE_NUM_THREADS"])
    request = core.compile_model(model, "CPU", config).create_infer_request()
    return lambda: request.infer({0: x})


def litert_call(case: dict, x: np.ndarray) -> Callable[[], object]:
    from ai_edge_litert.interpreter import Interpreter

    opts = case["provider"]["options"]
    interp = Interpreter(model_path=opts["tflite"], num_threads=int(opts["num_threads"]))
    inp = interp.get_input_details()[0]
    if x.ndim == 4 and tuple(x.shape[1:]) != tuple(inp["shape"][1:]):
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # an NCHW .onnx; the .tflite from Keras is NHWC
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    out = interp.get_output_details()[0]["index"]

    def run() -> object:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench_json")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--round-time", type=float, default=0.2)
    args = ap.parse_args()
    data = json.loads(open(args.bench_json).read())
    makers = {"onnxruntime": ort_call, "openvino": openvino_call, "litert": litert_call}
    print(f"{data['environment']['cpu']['model']}, {data['environment']['cpu']['usable_cores']} cores; "
          f"{args.rounds} interleaved rounds x {args.round_time} s per row")
    print(f"{'runtime':<14}{'precision':<10}{'batch':>6}{'bench p50 ms':>14}{'check p50 ms':>14}{'check/bench':>13}")
    for b in data["config"]["batch_sizes"]:
        cases = [c for c in data["cases"] if c["batch_size"] == b]
        rng = np.random.default_rng(b)
        samples: list[list[int]] = [[] for _ in cases]
        image = [d.dim_value for d in onnx.load(cases[0]["model"], load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1:]]
        x = rng.integers(0, 256, (b, *image)).astype(np.float32)
        calls = [makers[c["runtime"]](c, x) for c in cases]
        for call in calls:
            for _ in range(10):
                call()
        order = list(range(len(calls)))
        for _ in range(args.rounds):
            random.shuffle(order)
            for i in order:
                time.sleep(0.1)  # let the previous runner's pool threads stop spinning
                deadline = time.perf_counter_ns() + int(args.round_time * 1e9)
                while True:
                    t0 = time.perf_counter_ns()
                    calls[i]()
                    t1 = time.perf_counter_ns()
                    samples[i].append(t1 - t0)
                    if t1 > deadline and len(samples[i]) >= 3:
                        break
        for c, s in zip(cases, samples, strict=True):
            check = float(np.median(s)) / 1e6
            label = c["runtime"] + ("" if c["precision"] == "fp32" else f":{c['precision']}")
            print(f"{label:<14}{c['precision']:<10}{b:>6}{c['stats']['p50_ms']:>14.4f}{check:>14.4f}{check / c['stats']['p50_ms']:>13.2f}")


if __name__ == "__main__":
    main()
