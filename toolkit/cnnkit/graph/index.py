"""Indexes over an ONNX graph.

:class:`GraphIndex` is the one lookup of a graph's tensors: the node that makes each, the nodes that read it,
the initializers, the graph inputs and outputs, by name. Every module that walks a graph builds it here.

The rest maps Keras layers to tensors. tf2onnx names every node after the TensorFlow name scope it came from,
and Keras opens one scope per layer call (``<model>/<layer>[_N]/<op>``; TensorFlow appends ``_N`` to make
scopes unique). A layer's output is the last tensor of its scope that leaves the scope. tf2onnx runs
convolutions in NCHW and transposes back to NHWC where Keras' layout matters again (before Flatten, at the
output), so each tensor's layout is found by walking back to the op that fixed it.
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
class GraphIndex:
    """Lookups over one graph, built once by :meth:`of`. A snapshot: build another after editing the graph.

    ``inputs`` are the graph inputs that are not initializers (IR 3 lists every initializer as an input too).
    """

    nodes: tuple[Any, ...]  # in graph (topological) order
    producers: dict[str, Any]  # tensor -> the node that outputs it
    readers: dict[str, tuple[int, ...]]  # tensor -> positions in ``nodes`` of its readers, once per input slot
    initializers: dict[str, Any]  # name -> TensorProto
    inputs: dict[str, Any]  # name -> ValueInfoProto
    outputs: dict[str, Any]  # name -> ValueInfoProto

    @classmethod
    def of(cls, model_or_graph: Any) -> GraphIndex:
        """The index of an ``onnx.ModelProto`` or ``GraphProto``."""
        graph = getattr(model_or_graph, "graph", model_or_graph)
        nodes = tuple(graph.node)
        readers: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            for name in node.input:
                if name:  # "" is an omitted optional input
                    readers.setdefault(name, []).append(i)
        initializers = {t.name: t for t in graph.initializer}
        return cls(nodes, {out: node for node in nodes for out in node.output if out},
                   {name: tuple(at) for name, at in readers.items()}, initializers,
                   {vi.name: vi for vi in graph.input if vi.name not in initializers},
                   {vi.name: vi for vi in graph.output})

    def consumers(self, tensor: str) -> list[Any]:
        """The nodes that read ``tensor``, in graph order (a node reading it twice, twice)."""
        return [self.nodes[i] for i in self.readers.get(tensor, ())]

    def uses(self, tensor: str) -> int:
        """How many node inputs read ``tensor`` (graph outputs not counted)."""
        return len(self.readers.get(tensor, ()))


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
    index = GraphIndex.of(graph)

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
            if out in index.outputs or (set(index.readers.get(out, ())) - members)
        ]
        if leaving:
            result[layer] = TensorRef(layer, leaving[-1], tensor_layout(model, leaving[-1], index),
                                      tuple(dict.fromkeys(reversed(leaving[:-1]))))
    return result


def tensor_layout(model: Any, tensor: str, index: GraphIndex | None = None) -> str:
    """NHWC or NCHW for a 4-D tensor, by walking back to the op that decided it; else ``unknown``.

    ``index``: the model's :class:`GraphIndex`, when the caller has one."""
    index = index or GraphIndex.of(model)
    seen = 0
    while seen < 10_000:
        seen += 1
        if tensor in index.inputs:
            return "NHWC"  # Keras' layout; cnnkit exports without inputs_as_nchw
        node = index.producers.get(tensor)
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
