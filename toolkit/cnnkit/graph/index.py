"""Reading exported ONNX graphs: which tensor holds which Keras layer's output, in which layout.

tf2onnx names every node after the TensorFlow name scope it came from, and Keras opens one scope per
layer call (``<model>/<layer>[_N]/<op>``; TensorFlow appends ``_N`` to make scopes unique). A layer's output
is the last tensor of its scope that leaves the scope. tf2onnx runs convolutions in NCHW and transposes
back to NHWC where Keras' layout matters again (before Flatten, at the output), so each tensor's layout is
found by walking back to the op that fixed it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Ops whose 4-D output is NCHW in ONNX, whatever the Keras layout was.
_NCHW_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "BatchNormalization", "LpPool",
             "InstanceNormalization", "GlobalAveragePool", "GlobalMaxPool", "DepthToSpace", "SpaceToDepth"}
# Ops that keep the layout of their first input.
_LAYOUT_KEEPING = {"Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "Tanh", "Softplus", "Softsign",
                   "Clip", "Add", "Sub", "Mul", "Div", "Identity", "Cast", "Dropout", "PRelu", "HardSwish", "Gelu",
                   "Erf", "Abs", "Neg", "Max", "Min", "Pad", "QuantizeLinear", "DequantizeLinear"}


@dataclass(frozen=True)
class TensorRef:
    layer: str
    tensor: str
    layout: str  # "NHWC", "NCHW" or "unknown"
    alternatives: tuple[str, ...] = ()  # the scope's other leaving tensors, latest first (when the shape says no)


def _scope_parts(node_name: str) -> list[str]:
    return node_name.split("/")[:-1]


def map_layers_to_tensors(model: Any, layer_names: list[str]) -> dict[str, TensorRef]:
    """For each Keras layer name (in model order), the ONNX tensor that holds its output, if any.

    Layers that tf2onnx fused away (Dropout, a folded BatchNormalization) have no entry.
    """
    graph = model.graph
    # Scope name -> indices of its nodes, in graph (topological) order.
    scopes: dict[str, list[int]] = {}
    order: list[str] = []
    for i, node in enumerate(graph.node):
        parts = _scope_parts(node.name)
        if len(parts) >= 2:
            scope = parts[1]  # parts[0] is the model's scope
        elif len(parts) == 1:
            scope = parts[0]
        else:
            continue
        if scope not in scopes:
            scopes[scope] = []
            order.append(scope)
        scopes[scope].append(i)
    consumers: dict[str, set[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, set()).add(i)
    graph_outputs = {o.name for o in graph.output}
    producers = {out: node for node in graph.node for out in node.output}

    used: set[str] = set()
    result: dict[str, TensorRef] = {}
    for layer in layer_names:
        pattern = re.compile(re.escape(layer) + r"(_\d+)?")
        scope = next((s for s in order if s not in used and pattern.fullmatch(s)), None)
        if scope is None:
            continue
        used.add(scope)
        members = set(scopes[scope])
        leaving = [
            out
            for i in scopes[scope]
            for out in graph.node[i].output
            if out in graph_outputs or (consumers.get(out, set()) - members)
        ]
        if leaving:
            result[layer] = TensorRef(layer, leaving[-1], tensor_layout(model, leaving[-1], producers),
                                      tuple(dict.fromkeys(reversed(leaving[:-1]))))
    return result


def tensor_layout(model: Any, tensor: str, producers: dict[str, Any] | None = None) -> str:
    """NHWC or NCHW for a 4-D tensor, by walking back to the op that decided it; else ``unknown``."""
    if producers is None:
        producers = {out: node for node in model.graph.node for out in node.output}
    inputs = {i.name for i in model.graph.input}
    seen = 0
    while seen < 10_000:
        seen += 1
        if tensor in inputs:
            return "NHWC"  # Keras' layout; cnnkit exports without inputs_as_nchw
        node = producers.get(tensor)
        if node is None:
            return "unknown"
        if node.op_type in _NCHW_OPS:
            return "NCHW"
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if perm == [0, 2, 3, 1]:
                return "NHWC"
            if perm == [0, 3, 1, 2]:
                return "NCHW"
            return "unknown"
        if node.op_type in _LAYOUT_KEEPING and node.input:
            tensor = node.input[0]
            continue
        return "unknown"
    return "unknown"


def with_extra_outputs(model: Any, tensors: list[str]) -> bytes:
    """A serialised copy of ``model`` that also returns ``tensors`` (intermediate values) as outputs."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(copy)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    existing = {o.name for o in copy.graph.output}
    for name in tensors:
        if name in existing:
            continue
        vi = known.get(name)
        if vi is None:
            vi = onnx.helper.make_empty_tensor_value_info(name)
        copy.graph.output.append(vi)
    return copy.SerializeToString()
