"""Tiny ONNX image classifiers built with onnx.helper: fast to build, real to run (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_cnn(path: Path, dataset: str | None = "mnist", size: int = 28, channels: int = 1, classes: int = 10,
             seed: int = 0) -> Path:
    """NHWC uint8-range float input -> Transpose -> Conv 3x3 (4) -> Relu -> GAP -> Gemm -> Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, channels, 3, 3)) * 0.01).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((4, classes)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["nchw", "w1", "b1"], ["c1"], name="model/conv1/Conv", kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"], name="model/conv1/Relu"),
        helper.make_node("GlobalAveragePool", ["r1"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], name="dense"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", size, size, channels])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if dataset is not None:
        helper.set_model_props(model, {"dataset": dataset, "spec": "tiny"})
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString())
    return path


def no_conv_model(path: Path) -> Path:
    """A valid image model with no convolution: Flatten -> Softmax."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["f"]), helper.make_node("Softmax", ["f"], ["probabilities"], axis=1)],
        "noconv", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 784])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def vector_model(path: Path, inputs: int = 1) -> Path:
    """Not an image model: rank-2 input(s)."""
    from onnx import TensorProto, helper

    names = [f"x{i}" for i in range(inputs)]
    nodes = [helper.make_node("Sum", names, ["y"])] if inputs > 1 else [helper.make_node("Relu", names, ["y"])]
    graph = helper.make_graph(
        nodes, "vec", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 8]) for n in names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def quantized_model(path: Path) -> Path:
    """An image model that is already INT8 (QuantizeLinear/DequantizeLinear): quantize must refuse it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "zero")]
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"]),
        helper.make_node("Flatten", ["dq"], ["f"]),
        helper.make_node("Softmax", ["f"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "int8", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 784])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def nan_model(path: Path, conv: bool = False) -> Path:
    """An image model whose outputs are NaN for every non-blank image: Sqrt of the negated pixels — with ``conv``,
    of a 3x3 convolution of them (all-ones weights), so that it has a convolution layer to draw."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], "images"
    if conv:
        nodes = [helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
                 helper.make_node("Conv", ["nchw", "w"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv")]
        inits, x = [numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")], "conv"
    nodes += [
        helper.make_node("Neg", [x], ["neg"]),
        helper.make_node("Sqrt", ["neg"], ["root"]),
        helper.make_node("Flatten", ["root"], ["f"]),
        helper.make_node("Softmax", ["f"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "nan", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 784])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
