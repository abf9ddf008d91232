"""Tiny ONNX image classifiers built with ``onnx.helper``: any layout, batch and input dtype, as other exporters write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_ONNX_TYPES = {"float32": 1, "uint8": 2, "int8": 3, "float16": 10}


def tiny_classifier(path: Path, layout: str = "NCHW", batch: int | str = 1, dtype: str = "float32", hw: int = 8,
                    channels: int = 3, classes: int = 5, seed: int = 0, reshape_batch: bool = False,
                    ir_version: int = 9) -> Path:
    """input -> (Cast) -> *1/255 -> (Transpose NHWC->NCHW) -> Conv 3x3 -> Relu -> Conv 3x3 stride 2 -> Relu
    -> Flatten (or a Reshape to a constant [batch, -1]) -> Gemm -> Softmax.

    Seeded random weights; the outputs depend on the input. ``batch``: an int fixes it, a string names it.
    ``ir_version`` 3 lists the initializers as graph inputs too.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    dims = [batch, channels, hw, hw] if layout == "NCHW" else [batch, hw, hw, channels]
    x = helper.make_tensor_value_info("image", _ONNX_TYPES[dtype], dims)
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, classes])
    inits = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
        numpy_helper.from_array(rng.normal(0, 0.5, (8, channels, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.05, (8 * ((hw + 1) // 2) ** 2, classes)).astype(np.float32), "wd"),
        numpy_helper.from_array(rng.normal(0, 0.1, classes).astype(np.float32), "bd"),
    ]
    nodes = []
    t = "image"
    if dtype != "float32":
        nodes.append(helper.make_node("Cast", [t], ["x_f"], to=TensorProto.FLOAT, name="cast"))
        t = "x_f"
    nodes.append(helper.make_node("Mul", [t, "scale"], ["x_s"], name="rescale"))
    t = "x_s"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [t], ["x_t"], perm=[0, 3, 1, 2], name="to_nchw"))
        t = "x_t"
    nodes += [
        helper.make_node("Conv", [t, "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    ]
    if reshape_batch:
        inits.append(numpy_helper.from_array(np.array([batch if isinstance(batch, int) else 1, -1], np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", ["r2", "flat_shape"], ["flat"], name="flatten"))
    else:
        nodes.append(helper.make_node("Flatten", ["r2"], ["flat"], name="flatten"))
    nodes += [
        helper.make_node("Gemm", ["flat", "wd", "bd"], ["logits"], name="dense"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    inputs = [x]
    if ir_version < 4:  # IR 3: every initializer is a graph input too
        inputs += [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in inits]
    graph = helper.make_graph(nodes, "tiny", inputs, [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ir_version,
                              producer_name="onnx.helper")
    path.write_bytes(model.SerializeToString())
    return path


def reference_probs(path: Path, images_nhwc: np.ndarray) -> np.ndarray:
    """What ONNX Runtime says for ``images_nhwc`` (pixels 0..255), fed by hand one image at a time."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    inp = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    dtype = {1: np.float32, 2: np.uint8, 3: np.int8, 10: np.float16}[inp.type.tensor_type.elem_type]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    nchw = dims[1] in (1, 3) and dims[3] not in (1, 3)
    out = []
    for img in images_nhwc:
        x = img.transpose(2, 0, 1) if nchw else img
        x = x.astype(np.float32) - 128 if dtype is np.int8 else x
        b = dims[0] or 1
        feed = np.repeat(x[None], b, axis=0).astype(dtype)
        out.append(sess.run(None, {inp.name: feed})[0][0])
    return np.stack(out)


def odd_models(folder: Path) -> dict[str, Path]:
    """Models cnnkit must refuse in one line or run: not images, several inputs, dynamic H/W, a batch of 0,
    a 4-D (segmentation-like) output, an NHWC model without convolutions, two outputs."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    folder.mkdir(parents=True, exist_ok=True)
    w = nh.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    specs = {
        "conv1d": ([h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 28])], [h.make_node("Conv", ["x", "w1"], ["y"])],
                   [nh.from_array(np.ones((4, 1, 3), np.float32), "w1")]),
        "two_inputs": ([h.make_tensor_value_info("a", T.FLOAT, [1, 1, 28, 28]), h.make_tensor_value_info("b", T.FLOAT, [1, 1, 28, 28])],
                       [h.make_node("Add", ["a", "b"], ["y"])], []),
        "dynamic_hw": ([h.make_tensor_value_info("x", T.FLOAT, ["N", 1, "H", "W"])], [h.make_node("Conv", ["x", "w"], ["y"])], [w]),
        "int64_input": ([h.make_tensor_value_info("x", T.INT64, ["N", 28, 28, 1])], [h.make_node("Cast", ["x"], ["y"], to=T.FLOAT)], []),
        "batch_zero": ([h.make_tensor_value_info("x", T.FLOAT, [0, 1, 28, 28])], [h.make_node("Conv", ["x", "w"], ["y"])], [w]),
        "segmentation": ([h.make_tensor_value_info("x", T.FLOAT, [1, 1, 28, 28])], [h.make_node("Conv", ["x", "w"], ["y"])], [w]),
        "dense_nhwc": ([h.make_tensor_value_info("x", T.FLOAT, ["N", 28, 28, 1])],
                       [h.make_node("Flatten", ["x"], ["f"]), h.make_node("MatMul", ["f", "m"], ["y"])],
                       [nh.from_array(np.linspace(0, 1, 7840, dtype=np.float32).reshape(784, 10), "m")]),
    }
    out = {}
    for name, (inputs, nodes, inits) in specs.items():
        graph = h.make_graph(nodes, name, inputs, [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
        onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9), folder / f"{name}.onnx")
        out[name] = folder / f"{name}.onnx"
    return out


def chaotic_classifier(path: Path, gain: float = 1e4, hw: int = 28, channels: int = 1) -> Path:
    """NHWC float32 input -> mean pixel (/255) -> sin(gain * mean) -> scores [s, -s]: a two-class model whose top-1
    flips when the mean pixel moves by far less than a grey level, as a random-weight deep network's does."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", hw, hw, channels])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])
    inits = [numpy_helper.from_array(np.array(gain / 255, np.float32), "gain"),
             numpy_helper.from_array(np.array([-1, 1], np.int64), "col")]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=0, name="mean"),
        helper.make_node("Reshape", ["m", "col"], ["m2"], name="column"),
        helper.make_node("Mul", ["m2", "gain"], ["g"], name="amplify"),
        helper.make_node("Sin", ["g"], ["s"], name="sin"),
        helper.make_node("Neg", ["s"], ["n"], name="neg"),
        helper.make_node("Concat", ["s", "n"], ["scores"], axis=1, name="scores"),
    ]
    graph = helper.make_graph(nodes, "chaotic", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9,
                              producer_name="onnx.helper")
    path.write_bytes(model.SerializeToString())
    return path


def same_padding_classifier(path: Path, hw: int = 8, channels: int = 3, classes: int = 5, batch: int | str = 1,
                            seed: int = 0, ir_version: int = 9) -> Path:
    """NCHW float32 input -> TF "same" padding computed at run time -> Conv 3x3 stride 2 -> Relu -> Reshape to the
    constant [1, -1] -> Gemm -> Softmax: what a TorchScript export of a TF-ported EfficientNet (timm's ``pad_same``)
    writes. The pads come from Shape -> Gather -> arithmetic -> Concat, laid out for ``Pad`` as ``F.pad`` exports
    them (ConstantOfShape -> Concat -> Reshape -> Slice backwards -> Transpose -> Reshape -> Cast), which ONNX
    shape inference cannot see through. ``ir_version`` 3 lists the initializers as graph inputs too.
    """
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    out_hw = -(-hw // 2)
    x = h.make_tensor_value_info("image", T.FLOAT, [batch, channels, hw, hw])
    y = h.make_tensor_value_info("probs", T.FLOAT, [batch, classes])

    def i64(name: str, *values: int) -> Any:
        return nh.from_array(np.array(values, np.int64), name)

    def scalar(name: str, value: int) -> Any:
        return nh.from_array(np.array(value, np.int64), name)

    inits = [
        nh.from_array(rng.normal(0, 0.5, (8, channels, 3, 3)).astype(np.float32), "w"),
        nh.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b"),
        nh.from_array(rng.normal(0, 0.05, (8 * out_hw * out_hw, classes)).astype(np.float32), "wd"),
        nh.from_array(rng.normal(0, 0.1, classes).astype(np.float32), "bd"),
        nh.from_array(np.array(2.0, np.float32), "stride_f"),
        scalar("stride", 2), scalar("span", 3), scalar("zero", 0), scalar("one", 1), scalar("two", 2),
        i64("axis_h", 2), i64("axis_w", 3), i64("axis0", 0), i64("pairs", -1, 2), i64("flat", -1), i64("starts", -1),
        i64("ends", -(2**63) + 1), i64("axes", 0), i64("steps", -1), i64("batch_flat", 1, -1),
    ]
    nodes = [h.make_node("Shape", ["image"], ["shape"], name="/Shape")]
    pads = []
    for axis in ("h", "w"):
        # pad = max((ceil(size / stride) - 1) * stride + 3 - size, 0), split as (pad // 2, pad - pad // 2)
        nodes += [
            h.make_node("Gather", ["shape", f"axis_{axis}"], [f"{axis}_size1"], axis=0, name=f"/Gather_{axis}"),
            h.make_node("Squeeze", [f"{axis}_size1"], [f"{axis}_size"], name=f"/Squeeze_{axis}"),
            h.make_node("Cast", [f"{axis}_size"], [f"{axis}_f"], to=T.FLOAT, name=f"/Cast_{axis}"),
            h.make_node("Div", [f"{axis}_f", "stride_f"], [f"{axis}_q"], name=f"/Div_{axis}"),
            h.make_node("Ceil", [f"{axis}_q"], [f"{axis}_c"], name=f"/Ceil_{axis}"),
            h.make_node("Cast", [f"{axis}_c"], [f"{axis}_ci"], to=T.INT64, name=f"/CastBack_{axis}"),
            h.make_node("Sub", [f"{axis}_ci", "one"], [f"{axis}_m"], name=f"/Sub1_{axis}"),
            h.make_node("Mul", [f"{axis}_m", "stride"], [f"{axis}_ms"], name=f"/Mul_{axis}"),
            h.make_node("Add", [f"{axis}_ms", "span"], [f"{axis}_a"], name=f"/Add_{axis}"),
            h.make_node("Sub", [f"{axis}_a", f"{axis}_size"], [f"{axis}_d"], name=f"/Sub2_{axis}"),
            h.make_node("Max", [f"{axis}_d", "zero"], [f"{axis}_pad"], name=f"/Max_{axis}"),
            h.make_node("Div", [f"{axis}_pad", "two"], [f"{axis}_lo"], name=f"/Half_{axis}"),
            h.make_node("Sub", [f"{axis}_pad", f"{axis}_lo"], [f"{axis}_hi"], name=f"/Rest_{axis}"),
            h.make_node("Unsqueeze", [f"{axis}_lo", "axis0"], [f"{axis}_lo1"], name=f"/UnsqueezeLo_{axis}"),
            h.make_node("Unsqueeze", [f"{axis}_hi", "axis0"], [f"{axis}_hi1"], name=f"/UnsqueezeHi_{axis}"),
        ]
        pads += [f"{axis}_lo1", f"{axis}_hi1"]
    nodes += [
        # F.pad's [w_lo, w_hi, h_lo, h_hi] (last axis first), made whole for ONNX's [x1_begin, x2_begin, ..., x1_end, ...]
        h.make_node("Concat", [pads[2], pads[3], pads[0], pads[1]], ["torch_pads"], axis=0, name="/Concat"),
        h.make_node("ConstantOfShape", ["four"], ["zeros"], name="/ConstantOfShape",
                    value=nh.from_array(np.array([0], np.int64))),
        h.make_node("Concat", ["torch_pads", "zeros"], ["pads8"], axis=0, name="/Concat_1"),
        h.make_node("Reshape", ["pads8", "pairs"], ["pairs_t"], name="/Reshape_pairs"),
        h.make_node("Slice", ["pairs_t", "starts", "ends", "axes", "steps"], ["reversed"], name="/Slice"),
        h.make_node("Transpose", ["reversed"], ["begin_end"], perm=[1, 0], name="/Transpose"),
        h.make_node("Reshape", ["begin_end", "flat"], ["onnx_pads"], name="/Reshape_flat"),
        h.make_node("Cast", ["onnx_pads"], ["pads_i"], to=T.INT64, name="/Cast_pads"),
        h.make_node("Pad", ["image", "pads_i"], ["padded"], mode="constant", name="/Pad"),
        h.make_node("Conv", ["padded", "w", "b"], ["conv"], kernel_shape=[3, 3], strides=[2, 2], name="/conv/Conv"),
        h.make_node("Relu", ["conv"], ["relu"], name="/Relu"),
        h.make_node("Reshape", ["relu", "batch_flat"], ["flat_out"], name="/Reshape"),
        h.make_node("Gemm", ["flat_out", "wd", "bd"], ["logits"], name="/fc/Gemm"),
        h.make_node("Softmax", ["logits"], ["probs"], axis=1, name="/Softmax"),
    ]
    inits.append(i64("four", 4))
    inputs = [x]
    if ir_version < 4:  # IR 3: every initializer is a graph input too
        inputs += [h.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in inits]
    graph = h.make_graph(nodes, "same_padding", inputs, [y], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=ir_version,
                         producer_name="pytorch", producer_version="2.1.0")
    path.write_bytes(model.SerializeToString())
    return path


def tf_range_digit_classifier(path: Path, train_images: int = 2000, gain: float = 0.1) -> Path:
    """An MNIST classifier that works only on pixels scaled to [-1, 1] (the ``tf`` preset), as a pretrained model
    works only on the values it was trained on: each pixel becomes "is it background" (1 at -1, falling to 0 at
    -0.75: relu(1 - 4|x + 1|)), matched against per-class templates of that feature from real training digits.
    Fed 0..255, [0, 1] or mean-subtracted values, every feature is 0 and every answer is the same."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.imaging import mnist_digits

    x, y = mnist_digits(train_images, "train")
    feat = np.maximum(0.0, 1 - 4 * np.abs(x.astype(np.float64) / 127.5 - 1 + 1)).reshape(len(x), -1)
    means = np.stack([feat[y == c].mean(axis=0) for c in range(10)])
    # Nearest class mean: argmax of m_c . f - |m_c|^2 / 2.
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("one", 1.0), ("four", 4.0))]
    inits += [numpy_helper.from_array((gain * means.T).astype(np.float32), "templates"),
              numpy_helper.from_array((-gain / 2 * (means**2).sum(axis=1)).astype(np.float32), "bias")]
    nodes = [
        helper.make_node("Add", ["images", "one"], ["shifted"], name="shift"),
        helper.make_node("Abs", ["shifted"], ["distance"], name="distance"),
        helper.make_node("Mul", ["distance", "four"], ["scaled"], name="scale"),
        helper.make_node("Sub", ["one", "scaled"], ["closeness"], name="closeness"),
        helper.make_node("Relu", ["closeness"], ["background"], name="background"),
        helper.make_node("Flatten", ["background"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "templates", "bias"], ["logits"], name="match"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(nodes, "tf_range", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 28, 28, 1])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9, producer_name="onnx.helper")
    path.write_bytes(model.SerializeToString())
    return path


def depthwise_spread_classifier(path: Path, spread: float = 1e3, hw: int = 16) -> Path:
    """Dark-vs-bright images (NHWC float32, pixels 0..255) told apart through a depthwise convolution whose
    channels' weight ranges lie ``spread`` apart, as BatchNorm folded into a depthwise convolution leaves them.

    input -> /255 -> Conv 1x1 (4 channels) -> Relu -> depthwise Conv 3x3 -> Relu -> GlobalAveragePool -> Gemm
    -> Softmax. Channels 0 and 1 carry the brightness: their depthwise weights are ``1/spread`` of channels 2 and
    3's, whose inputs are as much smaller, so every depthwise output has the same range and only the weights
    differ. Per-tensor int8 weight scales round channels 0 and 1 to zero (every image then reads as dark);
    per-channel scales keep them. Score 1 ("bright") is the mean brightness, score 0 a constant 0.5.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    small = 1.0 / spread
    w1 = np.array([1.0, 1.0, small, small], np.float32).reshape(4, 1, 1, 1)
    wdw = np.concatenate([rng.uniform(0.5, 1.5, (2, 1, 3, 3)) * small / 9,
                          rng.choice([-1.0, 1.0], (2, 1, 3, 3))]).astype(np.float32)
    wfc = np.zeros((4, 2), np.float32)
    wfc[:2, 1] = spread / 2  # (f0 + f1) * spread / 2: the mean brightness, 0..1
    inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
             numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(wdw, "wdw"),
             numpy_helper.from_array(wfc, "wfc"), numpy_helper.from_array(np.array([0.5, 0.0], np.float32), "bfc")]
    nodes = [helper.make_node("Mul", ["image", "scale"], ["xs"], name="rescale"),
             helper.make_node("Transpose", ["xs"], ["xt"], perm=[0, 3, 1, 2], name="to_nchw"),
             helper.make_node("Conv", ["xt", "w1"], ["c1"], kernel_shape=[1, 1], name="pointwise"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "wdw"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4,
                              name="depthwise"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "wfc", "bfc"], ["logits"], name="dense"),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax")]
    graph = helper.make_graph(nodes, "depthwise_spread", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                         ["N", hw, hw, 1])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9,
                              producer_name="onnx.helper")
    path.write_bytes(model.SerializeToString())
    return path


def write_brightness_folder(root: Path, n: int = 40, hw: int = 16) -> Path:
    """PNG images in class folders ``0-dark`` (grey levels around 60) and ``1-bright`` (around 190), seeded."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(n):
        label = i % 2
        folder = root / ("1-bright" if label else "0-dark")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(rng.normal(190 if label else 60, 25, (hw, hw)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(folder / f"{i:03d}.png")
    return root


def float_ops_between_convs(path: Path, channels: int = 16, hw: int = 32) -> Path:
    """NCHW float32 input -> Conv -> Sin -> Conv -> Erf -> Conv -> GlobalAveragePool -> Flatten: Sin and Erf have no
    integer kernel, so an INT8 variant converts back to float around each of them (slower than FP32 by design)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (channels, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, (channels, channels, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.1, (channels, channels, 3, 3)).astype(np.float32), "w3")]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", **conv),
             helper.make_node("Sin", ["c1"], ["s1"], name="sin1"),
             helper.make_node("Conv", ["s1", "w2"], ["c2"], name="conv2", **conv),
             helper.make_node("Erf", ["c2"], ["s2"], name="erf2"),
             helper.make_node("Conv", ["s2", "w3"], ["c3"], name="conv3", **conv),
             helper.make_node("GlobalAveragePool", ["c3"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["y"], name="flatten")]
    graph = helper.make_graph(nodes, "float_ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9, producer_name="onnx.helper")
    path.write_bytes(model.SerializeToString())
    return path
