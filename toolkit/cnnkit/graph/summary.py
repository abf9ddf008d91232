"""``summary MODEL.onnx``: inputs and outputs, opset, producer, parameters and MACs per layer, op histogram.

MACs (multiply-accumulates) are counted per image (batch 1) for the ops that do the arithmetic of a CNN:
``Conv``: output elements x (input channels / group) x kernel area; ``ConvTranspose``: input elements x
(output channels / group) x kernel area; ``Gemm``/``MatMul``: output elements x the reduced dimension; their
quantized forms alike. Element-wise ops, pooling and normalisation are left out (they are memory-bound and
small next to these). Shapes come from ONNX shape inference with a dynamic batch set to 1 (a fixed batch
is kept, shapes show it, and MACs are divided by it). Where that leaves layers unknown (pads or reshape
targets computed at run time), the shapes come from the graph with those computations constant-folded
(:mod:`cnnkit.graph.fold`; ``shapes_folded`` counts the nodes folded). A layer whose shapes are still unknown
has MACs ``None`` and ``unknown_macs`` counts them; ``total_macs`` is the sum of the known ones.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnnkit.graph.fold import infer_shapes_folded, shape_of
from cnnkit.graph.index import GraphIndex
from cnnkit.graph.info import _DTYPES, ImageInput, image_input, load_onnx, model_precision

SCHEMA = "cnnkit.onnx-summary/1"
# op -> (index of the data input, index of the weight input)
MAC_OPS = {"Conv": (0, 1), "ConvTranspose": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3),
            "Gemm": (0, 1), "MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "QGemm": (0, 3),
            "FusedConv": (0, 1)}
# Ops that only change how a constant weight is stored: its parameters belong to the layer that uses it.
_CONST_PASS = {"DequantizeLinear", "Cast", "Identity", "Transpose", "Reshape", "Unsqueeze", "Squeeze"}
_WEIGHT_TYPES = {1, 2, 3, 6, 10, 11, 16}  # float, uint8, int8, int32 (quantized bias), float16, double, bfloat16


@dataclass(frozen=True)
class TensorDesc:
    name: str
    shape: tuple[Any, ...]
    dtype: str
    layout: str | None = None  # the image input's layout (and why), where it has one


@dataclass(frozen=True)
class OnnxLayer:
    name: str
    op: str
    output_shape: tuple[Any, ...] | None  # at batch 1, or at the model's fixed batch
    params: int
    macs: int | None  # per image; None: shapes unknown


@dataclass(frozen=True)
class OnnxSummary:
    schema: str
    model: str
    size_bytes: int
    ir_version: int
    opset: int
    producer: str
    precision: str
    inputs: tuple[TensorDesc, ...]
    outputs: tuple[TensorDesc, ...]
    image_input: dict[str, Any] | None  # ImageInput.to_dict(); None: not an image model (said in image_error)
    image_error: str | None
    layers: tuple[OnnxLayer, ...]  # the ops that carry weights or MACs, in graph order
    total_params: int
    total_macs: int
    unknown_macs: int  # layers whose MACs could not be counted
    op_histogram: dict[str, int]
    shapes_folded: int = 0  # nodes constant-folded to infer the shapes (0: plain shape inference sufficed)

    @property
    def nodes(self) -> int:
        return sum(self.op_histogram.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"nodes": self.nodes}


def _prod(dims: Any) -> int:
    return math.prod(int(d) for d in dims)


def _shape(value_info: Any) -> tuple[Any, ...] | None:
    return shape_of(value_info.type.tensor_type)


def _known(shape: tuple[Any, ...] | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def _at_batch_one(model: Any) -> Any:
    """A copy whose input batch is 1 (the batch dimension of a dynamic image input), no shapes inferred."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for inp in GraphIndex.of(copy).inputs.values():  # not the initializers IR 3 lists as inputs
        dims = inp.type.tensor_type.shape.dim
        if len(dims) >= 1 and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    del copy.graph.value_info[:]
    return copy


def _inferred_shapes(model: Any) -> dict[str, tuple[Any, ...] | None]:
    """Tensor shapes by ONNX shape inference (with data propagation); {} where inference fails."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 (a custom op or a malformed graph: MACs stay unknown)
        return {}
    return {vi.name: _shape(vi) for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}


def summarize_onnx(path: str | os.PathLike[str]) -> OnnxSummary:
    """Describe the ``.onnx`` file at ``path`` (no session is built, nothing is run)."""
    p = Path(path)
    model = load_onnx(p)
    graph = model.graph
    image: ImageInput | None = None
    image_error = None
    try:
        image = image_input(model, str(p))
    except Exception as exc:  # noqa: BLE001 (a CnnkitError: summary still describes non-image models)
        image_error = str(exc)
    consts: dict[str, tuple[int, int]] = {}  # name -> (elements, data_type)
    const_shapes: dict[str, tuple[Any, ...] | None] = {}
    for init in graph.initializer:
        consts[init.name] = (_prod(init.dims), init.data_type)
        const_shapes[init.name] = tuple(int(d) for d in init.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    consts[node.output[0]] = (_prod(a.t.dims), a.t.data_type)
                    const_shapes[node.output[0]] = tuple(int(d) for d in a.t.dims)
    at_one = _at_batch_one(model)
    shapes = const_shapes | _inferred_shapes(at_one)
    shapes_folded = 0
    mac_nodes = [n for n in graph.node if n.op_type in MAC_OPS]
    counted_before = sum(_macs(n, shapes) is not None for n in mac_nodes)
    if counted_before < len(mac_nodes):
        # A shape computed at run time (TF "same" padding in a TorchScript export): fold it and look again.
        folded = infer_shapes_folded(at_one)
        more = shapes | {k: v for k, v in folded.shapes.items() if _known(v) or k not in shapes}
        if sum(_macs(n, more) is not None for n in mac_nodes) > counted_before:
            shapes, shapes_folded = more, folded.folded
    index = GraphIndex.of(graph)

    def weight_sources(tensor: str, depth: int = 0) -> list[str]:
        """The constants a stored weight is made of (through dequantize/cast/reshape); [] for an activation."""
        if tensor in consts:
            return [tensor]
        node = index.producers.get(tensor)
        if node is None or node.op_type not in _CONST_PASS or depth > 4:
            return []
        found = [weight_sources(i, depth + 1) for i in node.input if i]
        return [s for part in found for s in part] if found and all(found) else []

    weight_ops = {"DequantizeLinear", "QuantizeLinear"} | _CONST_PASS
    layers: list[OnnxLayer] = []
    counted: set[str] = set()
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        sources = {s for inp in node.input if inp for s in weight_sources(inp)}
        # Weight-only nodes (dequantizing a constant) give their parameters to the layer that consumes them.
        if node.op_type in weight_ops and node.op_type not in MAC_OPS:
            continue
        params = sum(consts[s][0] for s in sources - counted if consts[s][1] in _WEIGHT_TYPES and shapes.get(s))
        counted |= sources
        macs = _macs(node, shapes) if node.op_type in MAC_OPS else None
        if macs is not None and image is not None and image.batch:
            macs //= image.batch
        if not params and node.op_type not in MAC_OPS:
            continue
        out_shape = shapes.get(node.output[0]) if node.output else None
        layers.append(OnnxLayer(node.name or f"{node.op_type}_{i}", node.op_type, out_shape, int(params), macs))
    total_params = sum(n for name, (n, t) in consts.items() if t in _WEIGHT_TYPES and len(shapes.get(name) or ()) >= 1)
    mac_layers = [layer for layer in layers if layer.op in MAC_OPS]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def desc(vi: Any, is_image: bool) -> TensorDesc:
        layout = f"{image.layout} ({image.layout_reason})" if is_image and image is not None else None
        return TensorDesc(vi.name, _shape(vi) or (), _DTYPES.get(vi.type.tensor_type.elem_type, "?"), layout)

    return OnnxSummary(
        schema=SCHEMA, model=str(p), size_bytes=p.stat().st_size, ir_version=int(model.ir_version), opset=opset,
        producer=" ".join(x for x in (model.producer_name, model.producer_version) if x) or "unknown",
        precision=model_precision(model),
        inputs=tuple(desc(vi, image is not None and vi.name == image.name) for vi in index.inputs.values()),
        outputs=tuple(desc(vi, False) for vi in graph.output),
        image_input=image.to_dict() if image is not None else None, image_error=image_error,
        layers=tuple(layers), total_params=int(total_params),
        total_macs=int(sum(layer.macs or 0 for layer in mac_layers)),
        unknown_macs=sum(1 for layer in mac_layers if layer.macs is None),
        op_histogram=dict(Counter(n.op_type for n in graph.node).most_common()), shapes_folded=shapes_folded,
    )


def _attr(node: Any, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else list(a.ints) if a.ints else default
    return default


def _macs(node: Any, shapes: dict[str, tuple[Any, ...] | None]) -> int | None:
    """Multiply-accumulates of one node at batch 1; None where a shape it needs is unknown."""
    data_i, weight_i = MAC_OPS[node.op_type]
    if len(node.input) <= weight_i:
        return None
    x, w = shapes.get(node.input[data_i]), shapes.get(node.input[weight_i])
    y = shapes.get(node.output[0])
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv", "FusedConv"):
        if not (_known(w) and _known(y)) or len(w) < 3:
            return None
        return _prod(y) * _prod(w[1:])  # out elements x (C_in / group) x kernel area
    if op == "ConvTranspose":
        if not (_known(w) and _known(x)) or len(w) < 3:
            return None
        return _prod(x) * _prod(w[1:])  # in elements x (C_out / group) x kernel area
    if op in ("Gemm", "QGemm"):
        if not (_known(x) and _known(y)) or len(x) != 2:
            return None
        k = x[0] if _attr(node, "transA", 0) else x[1]
        return _prod(y) * int(k)
    # MatMul and its quantized forms: numpy semantics, the reduced dimension is the first input's last.
    if not (_known(x) and _known(y)) or not x:
        return None
    return _prod(y) * int(x[-1])
