"""Tensor shapes through computed shape chains: shape inference with the small constant computations folded.

A TorchScript export of a TF-ported network (EfficientNet's "same" padding) computes its pads at run time:
Shape -> Gather -> arithmetic -> ConstantOfShape/Concat/Slice/Reshape -> Pad. ONNX shape inference stops inside
that chain, and every shape after the first such Pad is unknown. Constant folding resolves it, which is what
:func:`infer_shapes_folded` does without building a session: it walks the graph once, in its (topological)
order; a node whose inputs are all known constants of at most ``FOLD_LIMIT`` elements, or a ``Shape`` of a
tensor whose shape is known, is evaluated with onnx's reference implementation, and every other node's output
types are inferred from its inputs' types and those constant values. Weights are never evaluated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

FOLD_LIMIT = 65_536  # elements; shape computations hold a handful, weights far more
_RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


@dataclass(frozen=True)
class FoldedShapes:
    shapes: dict[str, tuple[Any, ...]]  # tensor -> shape (ints where known, a name or "?" where not)
    folded: int  # nodes evaluated to constants (Constant nodes not counted)


def shape_of(tensor_type: Any) -> tuple[Any, ...] | None:
    """The shape in an onnx ``TypeProto.Tensor``: ints where known, the dim's name or ``"?"`` where not."""
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor_type.shape.dim)


def _static(shape: tuple[Any, ...] | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def infer_shapes_folded(model: Any) -> FoldedShapes:
    """Shapes of ``model``'s tensors (an onnx ModelProto, not changed) with constant shape computations folded.

    Graph inputs keep the shapes they declare (fix a dynamic batch first for concrete shapes). Nodes of other
    domains, and nodes whose inference fails, leave their outputs unknown.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    opsets = {(o.domain if o.domain != "ai.onnx" else ""): o.version for o in model.opset_import}
    types: dict[str, Any] = {}
    values: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        types[init.name] = helper.make_tensor_type_proto(init.data_type, list(init.dims))
        if math.prod(init.dims) <= FOLD_LIMIT and init.data_location != onnx.TensorProto.EXTERNAL:
            values[init.name] = numpy_helper.to_array(init)
    for vi in graph.input:
        types.setdefault(vi.name, vi.type)

    def evaluate(node: Any) -> list[np.ndarray] | None:
        if node.domain not in ("", "ai.onnx") or node.op_type in _RANDOM_OPS:
            return None
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return None
        if node.op_type == "Shape":
            shape = shape_of(types[node.input[0]].tensor_type) if node.input[0] in types else None
            if not _static(shape):
                return None
            attrs = {a.name: a.i for a in node.attribute}  # opset 15: start and end, negative from the end
            return [np.array(shape, np.int64)[attrs.get("start", 0):attrs.get("end")]]
        if not all(i == "" or i in values for i in node.input):
            return None
        try:
            feeds = {i: values[i] for i in node.input if i}
            return list(ReferenceEvaluator(node, opsets=opsets).run(None, feeds))
        except Exception:  # noqa: BLE001 (an op the reference lacks: its outputs are inferred instead)
            return None

    folded = 0
    for node in graph.node:
        results = evaluate(node)
        if results is not None and len(results) == len(node.output):
            arrays = [np.asarray(r) for r in results]
            for name, arr in zip(node.output, arrays, strict=True):
                if not name:
                    continue
                types[name] = helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape))
                if arr.size <= FOLD_LIMIT:
                    values[name] = arr
            folded += node.op_type != "Constant"
            continue
        inputs = [i for i in node.input if i]
        if any(i not in types for i in inputs):
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets.get(node.domain or "", 1), node.domain)
            data = {i: numpy_helper.from_array(values[i], i) for i in inputs if i in values}
            out = onnx.shape_inference.infer_node_outputs(schema, node, {i: types[i] for i in inputs}, data,
                                                          opset_imports=list(model.opset_import),
                                                          ir_version=max(int(model.ir_version), 3))
        except Exception:  # noqa: BLE001 (a custom op or a malformed node: its outputs stay unknown)
            continue
        types.update(out)
    shapes = {}
    for name, t in types.items():
        shape = shape_of(t.tensor_type) if t.HasField("tensor_type") else None
        if shape is not None:
            shapes[name] = shape
    return FoldedShapes(shapes, folded)
