"""The one graph index (cnnkit.graph.index.GraphIndex) on graphs built with onnx.helper."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from cnnkit.graph.index import GraphIndex, tensor_layout


def _model(ir_version: int = 9):
    """x -> Transpose -> Conv(w) -> Relu -> Add(r, r) -> out; Clip with an omitted optional input reads r too."""
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["t", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "r"], ["out"], name="twice"),
        helper.make_node("Clip", ["r", "", ""], ["clipped"], name="clip"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 1])]
    if ir_version < 4:  # IR 3 lists every initializer as a graph input too
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 1, 1, 1]))
    graph = helper.make_graph(nodes, "g", inputs,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 4, 4]),
                               helper.make_tensor_value_info("clipped", TensorProto.FLOAT, [1, 2, 4, 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=ir_version)


def test_producers_consumers_and_names() -> None:
    model = _model()
    index = GraphIndex.of(model)
    assert [n.name for n in index.nodes] == ["to_nchw", "conv", "relu", "twice", "clip"]
    assert index.producers["r"].name == "relu" and "x" not in index.producers and "w" not in index.producers
    # One entry per input slot, in graph order; an omitted optional input ("") is no tensor.
    assert [n.name for n in index.consumers("r")] == ["twice", "twice", "clip"] and index.uses("r") == 3
    assert index.consumers("out") == [] and index.uses("nothing") == 0 and "" not in index.readers
    assert list(index.initializers) == ["w"] and list(index.inputs) == ["x"]
    assert set(index.outputs) == {"out", "clipped"}
    assert GraphIndex.of(model.graph).producers.keys() == index.producers.keys()  # a GraphProto works too


def test_initializers_listed_as_inputs_are_not_inputs() -> None:
    index = GraphIndex.of(_model(ir_version=3))
    assert list(index.inputs) == ["x"] and list(index.initializers) == ["w"]


def test_layout_walks_back_through_the_index() -> None:
    model = _model()
    index = GraphIndex.of(model)
    assert tensor_layout(model, "r", index) == "NCHW"  # Relu keeps the Conv's layout
    assert tensor_layout(model, "x") == "NHWC"  # the graph input: Keras' layout
    assert tensor_layout(model, "w", index) == "unknown"  # a constant, not the input
