"""Which nodes hurt: quantized nodes ranked by the error they add (activation SQNR from onnxruntime's
``qdq_loss_debug``, weight SQNR per output channel)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.choices import QuantFormat, QuantMode
from cnnkit.quantize.build import build_variant, quiet
from cnnkit.quantize.config import QuantizeConfig
from cnnkit.quantize.data import CalibrationReader, model_batch

QUANTIZABLE_OPS = {"Conv", "MatMul", "Gemm"}
GOOD_SQNR_DB = 30.0  # above it, quantization costs about nothing: the weight SQNR's ranking baseline too
BLAMED_FALL_DB = 3.0  # an activation SQNR falling less across a node than this is not its doing
# The debugger holds every intermediate tensor of every image it runs, for the float model and the QDQ model
# (whose quantized and dequantized copies make it about three times the float's): a random-weight ConvNeXtTiny
# at 96x96 on 64 images reached 22.9 GB and was killed. The images it measures on are cut to fit this.
ACTIVATION_MEMORY_BYTES = 1 << 30
MAX_DEBUG_IMAGES, MIN_DEBUG_IMAGES = 64, 2


@dataclass(frozen=True)
class Blame:
    """Nodes to blame for quantization error, and why. ``kind``: "activation" (the SQNR of the quantized model's
    values falls across them, measured) or "weight" (their weights lose precision when quantized)."""

    nodes: tuple[str, ...]
    why: str
    kind: str
    badness: float  # dB of SQNR lost, comparable across kinds; higher is worse
    sqnr_db: float | None = None  # activation: the SQNR at the segment's output; weight: the worst channel's


def rank_nodes_by_error(float_model: Path, variant: Path, config: QuantizeConfig, calib: np.ndarray | None,
                        input_name: str, excluded: list[str], work: Path,
                        per_channel_weights: tuple[str, ...] = ()) -> list[Blame]:
    """Nodes still quantized, worst first, each with why.

    Static models: ``qdq_loss_debug`` gives, per tensor, the SQNR of the quantized model's value against the
    float model's; a node is blamed for how far that SQNR falls from its inputs to its output, so the error is
    pinned where it arises rather than where it has accumulated. Measured on calibration images (training
    split): the test images only ever measure accuracy. Other modes, and nodes the debugger could not match:
    the quantization SQNR of the node's weights (per channel where ``config.per_channel`` or the weight is in
    ``per_channel_weights``).
    """
    import onnx

    from cnnkit.graph.index import GraphIndex

    model = onnx.load(str(float_model))
    index = GraphIndex.of(model)
    inits = index.initializers
    ranked: list[Blame] = []
    if config.mode is QuantMode.STATIC and calib is not None:
        from onnxruntime.quantization import qdq_loss_debug as dbg

        qdq = variant
        if config.format is QuantFormat.QOPERATOR:  # the debugger reads QDQ graphs: build the QDQ twin
            qdq = work / "qdq-twin.onnx"
            build_variant(float_model, qdq, dataclasses.replace(config, format=QuantFormat.QDQ), calib, input_name, excluded)
        aug_float, aug_qdq = work / "aug-float.onnx", work / "aug-qdq.onnx"
        batch = model_batch(float_model)
        with quiet():
            dbg.modify_model_output_intermediate_tensors(str(float_model), str(aug_float))
            dbg.modify_model_output_intermediate_tensors(str(qdq), str(aug_qdq))
            one = dbg.collect_activations(str(aug_float), CalibrationReader(input_name, calib[:1], batch))
            per_image = 4 * sum(a.nbytes for arrays in one.values() for a in arrays)  # float + QDQ (~3x)
            n = int(min(MAX_DEBUG_IMAGES, max(MIN_DEBUG_IMAGES, ACTIVATION_MEMORY_BYTES // max(per_image, 1))))
            sample = calib[:n]
            del one
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
            ranked.append(Blame(tuple(n.name for n in segment), f"SQNR falls {fall:.1f} dB across {names}, to "
                                f"{out_sqnr:.1f} dB", "activation", fall, out_sqnr))
    for node in index.nodes:
        if node.op_type in QUANTIZABLE_OPS and node.name not in excluded:
            per_channel = config.per_channel or any(i in per_channel_weights for i in node.input[1:2])
            w = weight_sqnr(node, inits, fp16=config.mode is QuantMode.FP16, per_channel=per_channel)
            if np.isfinite(w):
                # A weight SQNR of 30 dB costs about what a 30 dB activation fall would.
                ranked.append(Blame((node.name,), f"worst-channel weight SQNR {w:.1f} dB in {node.name}", "weight",
                                    GOOD_SQNR_DB - w, w))
    ranked.sort(key=lambda b: -b.badness)
    return ranked


def depthwise_weights(model_path: Path) -> tuple[str, ...]:
    """The weights of the depthwise convolutions (one input channel per group, several groups), whose channels
    often differ in range by orders of magnitude (BatchNorm folded in): per-tensor scales ruin them first."""
    import onnx

    from cnnkit.graph.index import GraphIndex

    index = GraphIndex.of(onnx.load(str(model_path)))
    found = []
    for node in index.nodes:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in index.initializers:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = list(index.initializers[node.input[1]].dims)
        if group > 1 and len(dims) >= 2 and dims[1] == 1:
            found.append(node.input[1])
    return tuple(found)


def region_activations(model_path: Path, nodes: tuple[str, ...]) -> tuple[str, ...]:
    """The activation tensors (not weights) going into and out of ``nodes``: what 16-bit activations around them
    widen."""
    import onnx

    from cnnkit.graph.index import GraphIndex

    index = GraphIndex.of(onnx.load(str(model_path)))
    wanted = set(nodes)
    tensors: list[str] = []
    for node in index.nodes:
        if node.name in wanted:
            for t in (*node.input, *node.output):
                if t and t not in index.initializers and t not in tensors:
                    tensors.append(t)
    return tuple(tensors)


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



@dataclass(frozen=True)
class NodeExplanation:
    """One blamed node, measured: its weights' worst-channel SQNR per tensor and per channel (None: no weights, or
    none lost in quantization — ``has_weights`` tells which), the activation SQNR where its error shows (None: not
    measured), and the fix for it."""

    node: str
    op_type: str
    has_weights: bool
    weight_sqnr_per_tensor_db: float | None
    weight_sqnr_per_channel_db: float | None
    activation_sqnr_db: float | None
    why: str
    fix: str  # what the loop applied, or would try first, for this node
    applied: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def explain_nodes(ranked: list[Blame], float_model: Path, recipe: Any, limit: int = 10) -> list[NodeExplanation]:
    """The ``limit`` worst-blamed nodes of ``ranked`` (from :func:`rank_nodes_by_error` on the variant as asked):
    weights under GOOD_SQNR_DB, or an activation SQNR falling BLAMED_FALL_DB or more across the node to under
    GOOD_SQNR_DB. Each with the fix ``recipe`` (a :class:`cnnkit.quantize.config.Recipe`) applied to it, or else
    the first the loop would try: per-channel weights where they recover 10 dB or more, 16-bit activations where
    the activation SQNR falls across it, else float."""
    import onnx

    from cnnkit.graph.index import GraphIndex

    index = GraphIndex.of(onnx.load(str(float_model)))
    by_name = {n.name: n for n in index.nodes}
    # node -> (output SQNR, why) of the worst activation segment it belongs to; blamed where the SQNR falls across
    # it by BLAMED_FALL_DB or more, to under GOOD_SQNR_DB (SQNR accumulates: a low figure downstream of the culprit,
    # with no fall across the node, is inherited, not caused)
    activation: dict[str, tuple[float | None, str]] = {}
    blamed: set[str] = set()
    for blame in ranked:
        if blame.kind == "activation":
            for name in blame.nodes:
                activation.setdefault(name, (blame.sqnr_db, blame.why))
                if blame.badness >= BLAMED_FALL_DB and (blame.sqnr_db or 0.0) < GOOD_SQNR_DB:
                    blamed.add(name)
    rows: list[NodeExplanation] = []
    seen: set[str] = set()
    for blame in ranked:
        for name in blame.nodes:
            node = by_name.get(name)
            if node is None or name in seen:
                continue
            seen.add(name)
            quantizable = node.op_type in QUANTIZABLE_OPS
            w_t = weight_sqnr(node, index.initializers, fp16=False) if quantizable else float("inf")
            w_c = weight_sqnr(node, index.initializers, fp16=False, per_channel=True) if quantizable else float("inf")
            act, act_why = activation.get(name, (None, None))
            weights_hurt = np.isfinite(w_t) and w_t < GOOD_SQNR_DB
            if name not in blamed and not weights_hurt:
                continue
            weight = node.input[1] if len(node.input) > 1 else ""
            tensors = {t for t in (*node.input, *node.output) if t}
            if name in recipe.excluded_nodes:
                fix, applied = "kept in float", True
            elif quantizable and (recipe.per_channel or weight in recipe.per_channel_weights):
                fix, applied = "per-channel weights", True
            elif tensors & set(recipe.activations_16bit):
                fix, applied = "16-bit activations", True
            elif weights_hurt and w_c - w_t >= 10:
                fix, applied = "per-channel weights", False
            elif name in blamed:
                fix, applied = "16-bit activations around it", False
            else:
                fix, applied = "keep in float", False
            has_weights = quantizable and len(node.input) > 1 and node.input[1] in index.initializers
            rows.append(NodeExplanation(name, node.op_type, has_weights, w_t if np.isfinite(w_t) else None,
                                        w_c if np.isfinite(w_c) else None, act, act_why or blame.why, fix, applied))
            if len(rows) >= limit:
                return rows
    return rows
