"""Which nodes hurt: quantized nodes ranked by the error they add (activation SQNR from onnxruntime's
``qdq_loss_debug``, weight SQNR per output channel)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.choices import QuantFormat, QuantMode
from cnnkit.quantize.build import build_variant, quiet
from cnnkit.quantize.config import QuantizeConfig
from cnnkit.quantize.data import CalibrationReader, model_batch

QUANTIZABLE_OPS = {"Conv", "MatMul", "Gemm"}


def rank_nodes_by_error(float_model: Path, variant: Path, config: QuantizeConfig, calib: np.ndarray | None,
                        input_name: str, excluded: list[str], work: Path) -> list[tuple[str, str]]:
    """Nodes still quantized, worst first, each with why: ``(node name, explanation)``.

    Static models: ``qdq_loss_debug`` gives, per tensor, the SQNR of the quantized model's value against the
    float model's; a node is blamed for how far that SQNR falls from its inputs to its output, so the error is
    pinned where it arises rather than where it has accumulated. Measured on calibration images (training
    split): the test images only ever measure accuracy. Other modes, and nodes the debugger could not match:
    the quantization SQNR of the node's weights.
    """
    import onnx

    from cnnkit.graph.index import GraphIndex

    model = onnx.load(str(float_model))
    index = GraphIndex.of(model)
    inits = index.initializers
    ranked: list[tuple[float, tuple[str, ...], str]] = []  # (badness, nodes, why); higher badness is worse
    if config.mode is QuantMode.STATIC and calib is not None:
        from onnxruntime.quantization import qdq_loss_debug as dbg

        qdq = variant
        if config.format is QuantFormat.QOPERATOR:  # the debugger reads QDQ graphs: build the QDQ twin
            qdq = work / "qdq-twin.onnx"
            build_variant(float_model, qdq, dataclasses.replace(config, format=QuantFormat.QDQ), calib, input_name, excluded)
        aug_float, aug_qdq = work / "aug-float.onnx", work / "aug-qdq.onnx"
        batch = model_batch(float_model)
        sample = calib[:64]
        with quiet():
            dbg.modify_model_output_intermediate_tensors(str(float_model), str(aug_float))
            dbg.modify_model_output_intermediate_tensors(str(qdq), str(aug_qdq))
            float_acts = dbg.collect_activations(str(aug_float), CalibrationReader(input_name, sample, batch))
            qdq_acts = dbg.collect_activations(str(aug_qdq), CalibrationReader(input_name, sample, batch))
            errors = dbg.compute_activation_error(dbg.create_activation_matching(qdq_acts, float_acts))
        sqnr = {t: float(e["xmodel_err"]) for t, e in errors.items() if "xmodel_err" in e}
        for tensor, out_sqnr in sqnr.items():
            segment, upstream = _segment_to_measured(tensor, index.producers, sqnr, input_name, max(sqnr.values()))
            segment = [n for n in segment if n.name and n.name not in excluded]
            if not segment or not upstream:
                continue
            fall = min(upstream) - out_sqnr
            names = ", ".join(n.name for n in segment)
            ranked.append((fall, tuple(n.name for n in segment), f"SQNR falls {fall:.1f} dB across {names}, to {out_sqnr:.1f} dB"))
    for node in index.nodes:
        if node.op_type in QUANTIZABLE_OPS and node.name not in excluded:
            w = weight_sqnr(node, inits, fp16=config.mode is QuantMode.FP16, per_channel=config.per_channel)
            if np.isfinite(w):
                # A weight SQNR of 30 dB costs about what a 30 dB activation fall would.
                ranked.append((30.0 - w, (node.name,), f"worst-channel weight SQNR {w:.1f} dB in {node.name}"))
    ranked.sort(key=lambda r: -r[0])
    return [(names, why) for _, names, why in ranked]


def _segment_to_measured(tensor: str, producers: dict[str, Any], measured: dict[str, float],
                         graph_input: str, input_sqnr: float) -> tuple[list[Any], list[float]]:
    """The nodes between ``tensor`` and the nearest measured tensors upstream, and those tensors' SQNRs.

    Quantized graphs fuse (Conv+Relu), so a conv's own output is not measured: its error shows at the next
    measured tensor, and the whole segment is to blame.
    """
    segment: list[Any] = []
    upstream: list[float] = []
    stack, seen = [tensor], set()
    while stack:
        t = stack.pop()
        node = producers.get(t)
        if node is None or id(node) in seen:
            if t == graph_input and t not in measured:
                upstream.append(input_sqnr)  # an unmeasured graph input: as good as the best measured tensor
            continue
        seen.add(id(node))
        segment.append(node)
        for i in node.input:
            if i in measured:
                upstream.append(measured[i])
            elif i in producers or i == graph_input:
                stack.append(i)
    return segment, upstream


def weight_sqnr(node: Any, inits: dict[str, Any], fp16: bool, per_channel: bool = False) -> float:
    """Worst output channel's SQNR (dB) of the node's weights after quantization (int8 symmetric, per tensor
    unless ``per_channel``; or float16). Whole-tensor SQNR would hide an outlier channel."""
    from onnx import numpy_helper

    weights = [numpy_helper.to_array(inits[i]) for i in node.input[1:2] if i in inits]
    if not weights or weights[0].ndim < 2:
        return float("inf")
    w = weights[0].astype(np.float64)
    # Output channels: axis 0 for Conv (OIHW), the last axis for MatMul/Gemm (K x N).
    w = w if node.op_type == "Conv" else np.moveaxis(w, -1, 0)
    if fp16:
        deq = w.astype(np.float16).astype(np.float64)
    else:
        axes = tuple(range(1, w.ndim))
        peak = np.abs(w).max(axis=axes, keepdims=True) if per_channel else np.abs(w).max()
        scale = np.where(peak > 0, peak / 127.0, 1.0)
        deq = np.clip(np.round(w / scale), -127, 127) * scale
    signal = np.sum(w.reshape(len(w), -1) ** 2, axis=1)
    noise = np.sum((w - deq).reshape(len(w), -1) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        per = np.where(noise > 0, 10 * np.log10(np.maximum(signal, 1e-30) / np.maximum(noise, 1e-30)), np.inf)
    return float(per.min())

