"""Planted faults for issue 21's evidence: from a classifier MODEL.onnx ending in Softmax (and its MODEL.fp16.onnx),
write into OUT: weight.onnx (one weight of the first convolution changed by 0.05), nan.onnx (the probabilities plus
0 * sqrt(p - 0.001): NaN wherever a probability is below 0.001) and fp16-off.onnx (the FP16 variant with noise of
twice their own spread on the largest 2-D weight). Each must fail cnnkit verify and be named.

    python scripts/verify_faults.py MODEL.onnx OUT/
"""
from __future__ import annotations

import sys
from pathlib import Path
import numpy as np
import onnx
from onnx import helper, numpy_helper

src = Path(sys.argv[1]); out = Path(sys.argv[2]); out.mkdir(exist_ok=True)
# 1. one weight changed by 0.05 in the first convolution kernel
m = onnx.load(str(src))
conv = next(n for n in m.graph.node if n.op_type == "Conv")
w_name = conv.input[1]
for i, t in enumerate(m.graph.initializer):
    if t.name == w_name:
        w = numpy_helper.to_array(t).copy(); w.flat[0] += 0.05
        m.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, t.name))
onnx.save(m, str(out / "weight.onnx")); print("weight changed:", w_name)
# 2. a graph that makes NaN: sqrt(p - 0.001) * 0 added to the probabilities
m = onnx.load(str(src))
sm = next(n for n in m.graph.node if n.op_type == "Softmax")
final = sm.output[0]; sm.output[0] = "sm_raw"
m.graph.initializer.extend([numpy_helper.from_array(np.array(0.001, np.float32), "nan_shift"),
                            numpy_helper.from_array(np.array(0.0, np.float32), "nan_zero")])
m.graph.node.extend([helper.make_node("Sub", ["sm_raw", "nan_shift"], ["nan_a"], name="planted_sub"),
                     helper.make_node("Sqrt", ["nan_a"], ["nan_b"], name="planted_sqrt"),
                     helper.make_node("Mul", ["nan_b", "nan_zero"], ["nan_c"], name="planted_mul"),
                     helper.make_node("Add", ["sm_raw", "nan_c"], [final], name="planted_add")])
onnx.save(m, str(out / "nan.onnx")); print("nan graph: Sqrt(p - 0.001)")
# 3. an FP16 variant beyond tolerance: the last dense layer's fp16 weights with noise of their own std
fp16 = src.with_name(src.stem + ".fp16.onnx")
m = onnx.load(str(fp16))
dense = max((t for t in m.graph.initializer if len(t.dims) == 2), key=lambda t: t.dims[0] * t.dims[1])
rng = np.random.default_rng(0)
for i, t in enumerate(m.graph.initializer):
    if t.name == dense.name:
        w = numpy_helper.to_array(t).astype(np.float32)
        w = (w + rng.normal(0, 2 * w.std(), w.shape)).astype(numpy_helper.to_array(t).dtype)
        m.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, t.name))
onnx.save(m, str(out / "fp16-off.onnx")); print("fp16 beyond tolerance:", dense.name, numpy_helper.to_array(dense).dtype)
