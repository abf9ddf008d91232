"""What an ``.onnx`` file is: its image input, outputs, precision, metadata. Reads the file, runs nothing.

Everything cnnkit knows about a model's input lives here (:class:`ImageInput`): the layout, the image size,
whether the batch is fixed, the dtype, and how cnnkit's canonical images (``(N, H, W, C)`` pixel values
0..255, as every dataset and image loader yields them) become what the model takes (:meth:`ImageInput.to_model`).

Layout rule, first match wins (the reason is kept in ``ImageInput.layout_reason``):
1. the model's metadata says so (``input_layout``, written by ``cnnkit export``; :mod:`cnnkit.graph.metadata`);
2. the graph says so: the input reaches a ``Conv`` (through element-wise ops only: NCHW) or a
   ``Transpose`` with ``perm=[0, 3, 1, 2]`` (NHWC, as tf2onnx writes);
3. the shape says so: a channel-like size (1..4) in the last place and not the second is NHWC, in the
   second and not the last NCHW;
4. otherwise NHWC (Keras' default), said as a guess.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError, ModelFileError
from cnnkit.graph import metadata
from cnnkit.graph.index import GraphIndex
from cnnkit.graph.metadata import InputDescription
from cnnkit.filekind import not_onnx_error, require_file

_INT8_STATIC_OPS = {"QLinearConv", "QLinearMatMul", "QGemm", "QuantizeLinear", "DequantizeLinear"}
_INT8_DYNAMIC_OPS = {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 10: "float16", 11: "float64", 16: "bfloat16", 6: "int32",
           7: "int64", 9: "bool", 4: "uint16", 5: "int16", 12: "uint32", 13: "uint64"}
IMAGE_DTYPES = ("float32", "float16", "float64", "uint8", "int8")
# Ops an input may pass through (unchanged layout) before the op that reveals its layout.
_ELEMENTWISE = {"Cast", "Sub", "Add", "Mul", "Div", "Identity", "Relu", "Clip", "BatchNormalization", "Neg",
                "QuantizeLinear", "DequantizeLinear", "Sqrt", "Abs"}
_CONV_OPS = {"Conv", "QLinearConv", "ConvInteger", "MaxPool", "AveragePool"}
MAKE_DYNAMIC_HINT = "cnnkit export --make-batch-dynamic {model} -o OUT.onnx"


@dataclass(frozen=True)
class ImageInput:
    """A model's one image input. ``batch`` is None when the batch dimension is dynamic."""

    name: str
    shape: tuple[Any, ...]  # as declared; symbolic dimensions as strings
    dtype: str  # numpy name: float32, float16, float64, uint8, int8
    layout: str  # NHWC or NCHW
    layout_reason: str
    batch: int | None
    height: int
    width: int
    channels: int

    @property
    def hwc(self) -> tuple[int, int, int]:
        """One image as cnnkit holds it: (height, width, channels)."""
        return (self.height, self.width, self.channels)

    @property
    def fixed_batch(self) -> bool:
        return self.batch is not None

    def accepts_batch(self, batch_size: int) -> bool:
        return self.batch is None or self.batch == batch_size

    def model_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        """The tensor shape the model takes for ``batch_size`` images."""
        if self.layout == "NCHW":
            return (batch_size, self.channels, self.height, self.width)
        return (batch_size, self.height, self.width, self.channels)

    @property
    def pixel_encoding(self) -> str:
        """How a pixel value 0..255 becomes this dtype (said in results)."""
        return {"uint8": "uint8 pixels 0..255", "int8": "int8 pixels - 128 (0..255 -> -128..127)"}.get(
            self.dtype, f"{self.dtype} values as given")

    def to_model(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W, C)`` images (pixel values, any numeric dtype) -> the model's layout and dtype.

        uint8 inputs take rounded pixels clipped to 0..255; int8 inputs take pixel - 128 (the zero point of
        int8-input quantized models), clipped to -128..127; float inputs take the values as they are.
        """
        x = np.asarray(images)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.hwc:
            raise CnnkitError(f"images of shape {tuple(x.shape[1:])} given; input {self.name} takes {self.hwc} (H, W, C)")
        return pixels_to_model(x, self.layout, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"pixel_encoding": self.pixel_encoding}


def pixels_to_model(x: np.ndarray, layout: str, dtype: str) -> np.ndarray:
    """``(N, H, W, C)`` values -> ``layout`` and ``dtype``: uint8 takes rounded pixels clipped to 0..255, int8
    pixel - 128 clipped to -128..127 (an int8 array is taken as already shifted), floats the values as given."""
    x = np.asarray(x)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    if dtype == "uint8":
        x = x if x.dtype == np.uint8 else np.clip(np.rint(x), 0, 255).astype(np.uint8)
    elif dtype == "int8":
        x = x if x.dtype == np.int8 else np.clip(np.rint(x.astype(np.float32) - 128.0), -128, 127).astype(np.int8)
    elif x.dtype != np.dtype(dtype):
        x = x.astype(dtype)
    return np.ascontiguousarray(x)


@dataclass(frozen=True)
class OnnxModelInfo:
    path: str
    sha256: str
    size_bytes: int
    opset: int
    input_name: str
    input_shape: tuple[Any, ...]  # as declared, symbolic dimensions as strings
    input_dtype: str  # numpy name: float32, uint8, float16, int8
    output_names: tuple[str, ...]
    precision: str  # fp32, fp16, int8-static, int8-dynamic, mixed
    layout: str  # NHWC or NCHW (see the module docstring for the rule); "-" without require_image
    metadata: dict[str, str] = field(default_factory=dict)
    input: ImageInput | None = None  # None only with require_image=False and a non-image input
    classes: int | None = None  # scores per image in the first output (a classifier's classes); None: unknown

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One image as cnnkit's datasets hold it, whatever the model's layout: (H, W, C), e.g. (28, 28, 1)."""
        if self.input is None:
            return tuple(int(d) for d in self.input_shape[1:])
        return self.input.hwc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def value_dims(value_info: Any) -> tuple[Any, ...]:
    """A graph value's shape: named dims as their name, unknown ones as ``"?"``."""
    return tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                 for d in value_info.type.tensor_type.shape.dim)


def _structural_layout(index: GraphIndex, input_name: str) -> tuple[str, str] | None:
    """NCHW/NHWC from what the input flows into (element-wise ops are followed), or None."""
    frontier, seen = [input_name], set()
    while frontier:
        tensor = frontier.pop()
        if tensor in seen or len(seen) > 64:
            continue
        seen.add(tensor)
        for node in index.consumers(tensor):
            if node.op_type in _CONV_OPS and node.input and node.input[0] == tensor:
                return "NCHW", f"the input feeds a {node.op_type} ({node.name or 'unnamed'}) directly; ONNX convolutions are NCHW"
            if node.op_type == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                if perm == [0, 3, 1, 2]:
                    return "NHWC", "the input is transposed NHWC->NCHW (perm 0,3,1,2) before the first convolution"
                if perm == [0, 2, 3, 1]:
                    return "NCHW", "the input is transposed NCHW->NHWC (perm 0,2,3,1)"
                continue
            if node.op_type in _ELEMENTWISE:
                frontier.extend(node.output)
    return None


def _shape_layout(dims: tuple[Any, ...]) -> tuple[str, str] | None:
    def chan(d: Any) -> bool:
        return isinstance(d, int) and 1 <= d <= 4

    if chan(dims[3]) and not chan(dims[1]):
        return "NHWC", f"shape {list(dims)}: channel-like size last"
    if chan(dims[1]) and not chan(dims[3]):
        return "NCHW", f"shape {list(dims)}: channel-like size second"
    return None


def describe_inputs(inputs: list[Any]) -> str:
    """``name [dims] dtype, ...`` for graph inputs, for error messages."""
    return ", ".join(f"{i.name} {list(value_dims(i))} {_DTYPES.get(i.type.tensor_type.elem_type, '?')}" for i in inputs)


def image_input(model: Any, label: str) -> ImageInput:
    """The one image input of ``model`` (an ``onnx.ModelProto``); anything else is a one-line error."""
    graph = model.graph
    index = GraphIndex.of(graph)
    inputs = list(index.inputs.values())
    described = describe_inputs(inputs)
    if len(inputs) != 1:
        raise ModelFileError(f"{label}: cnnkit runs image classifiers with one input; this one has {len(inputs)}: "
                             f"{described or 'none'}",
                             hint="export a graph whose only input is the image (constants as initializers)")
    if not graph.output:
        raise ModelFileError(f"{label}: the graph has no outputs")
    inp = inputs[0]
    dims = value_dims(inp)
    dtype = _DTYPES.get(inp.type.tensor_type.elem_type, str(inp.type.tensor_type.elem_type))
    not_image = f"{label}: input {inp.name} {list(dims)} {dtype} is not an image tensor"
    if len(dims) != 4:
        raise ModelFileError(f"{not_image}: expected 4 dimensions (batch, H, W, C) or (batch, C, H, W)",
                             hint="cnnkit benchmarks and evaluates image classifiers")
    if dtype not in IMAGE_DTYPES:
        raise ModelFileError(f"{not_image}: dtype {dtype}", hint=f"cnnkit feeds images as {', '.join(IMAGE_DTYPES)}")
    declared = InputDescription.from_metadata(metadata.read(model))
    found = None
    if declared.layout is not None:
        found = (declared.layout, f"the model's metadata ({metadata.INPUT_LAYOUT})")
    found = found or _structural_layout(index, inp.name) or _shape_layout(dims)
    if found is None:
        found = ("NHWC", f"a guess: shape {list(dims)} and graph do not tell; NHWC is Keras' default")
    layout, reason = found
    h, w, c = (dims[2], dims[3], dims[1]) if layout == "NCHW" else (dims[1], dims[2], dims[3])
    dynamic = [name for name, d in (("height", h), ("width", w), ("channels", c)) if not (isinstance(d, int) and d > 0)]
    if dynamic:
        params = [str(d) for d in (h, w, c) if isinstance(d, str)]
        fix = (f"fix them first, e.g. python -m onnxruntime.tools.make_dynamic_shape_fixed --dim_param {params[0]} "
               f"--dim_value 224 {label} fixed.onnx") if params else "fix the image size in the graph first"
        raise ModelFileError(f"{label}: input {inp.name} {list(dims)} ({layout}) has no fixed {' and '.join(dynamic)}; "
                             "cnnkit needs the image size", hint=fix)
    if dims[0] == 0:
        raise ModelFileError(f"{label}: input {inp.name} {list(dims)} declares a batch of 0: no image can be fed",
                             hint="export it again with a dynamic batch (or a positive one)")
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    return ImageInput(inp.name, dims, dtype, layout, reason, batch, int(h), int(w), int(c))


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """``onnx.load`` without external data; a missing or unreadable file is a one-line error."""
    import onnx

    p = require_file(path)
    try:
        return onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 (protobuf's DecodeError and friends)
        raise not_onnx_error(p, f"protobuf {type(exc).__name__}") from None


def model_precision(model: Any) -> str:
    ops = {n.op_type for n in model.graph.node}
    init_types = {i.data_type for i in model.graph.initializer if len(i.dims) >= 1}
    if ops & _INT8_DYNAMIC_OPS:
        return "int8-dynamic"
    if ops & _INT8_STATIC_OPS:
        return "int8-static"
    if 10 in init_types and 1 in init_types:
        return "mixed"
    if 10 in init_types:
        return "fp16"
    return "fp32"


def output_classes(model: Any) -> int | None:
    """How many scores the first output gives per image (a classifier's class count): the product of its
    non-batch dimensions, as declared or, where not declared, by shape inference; None where unknown."""
    import onnx

    def per_image(value_info: Any) -> int | None:
        dims = value_dims(value_info)
        if len(dims) < 2 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            return None
        return math.prod(dims[1:])

    if not model.graph.output:
        return None
    found = per_image(model.graph.output[0])
    if found is None:
        try:
            found = per_image(onnx.shape_inference.infer_shapes(model).graph.output[0])
        except Exception:  # noqa: BLE001 (a custom op or a malformed graph: unknown)
            return None
    return found


def describe_onnx(path: str | os.PathLike[str], require_image: bool = True) -> OnnxModelInfo:
    """Read ``path`` and describe it; a missing or corrupt file, or (with ``require_image``) a model whose
    one input is not a fixed-size image tensor, is a one-line error naming the inputs."""
    from cnnkit.io import sha256_file

    p = Path(path)
    model = load_onnx(p)
    graph = model.graph
    image: ImageInput | None = None
    if require_image:
        image = image_input(model, str(p))
        name, shape, dtype, layout = image.name, image.shape, image.dtype, image.layout
    else:
        inputs = list(GraphIndex.of(graph).inputs.values())
        if len(inputs) != 1 or not graph.output:
            raise ModelFileError(f"{p}: cnnkit runs models with one input and at least one output; this one has "
                                 f"{len(inputs)} input(s) ({describe_inputs(inputs) or 'none'}) and "
                                 f"{len(graph.output)} output(s)")
        name, shape = inputs[0].name, value_dims(inputs[0])
        dtype = _DTYPES.get(inputs[0].type.tensor_type.elem_type, str(inputs[0].type.tensor_type.elem_type))
        layout = "-"
        try:
            image = image_input(model, str(p))
            layout = image.layout
        except ModelFileError:
            pass
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxModelInfo(
        path=str(p), sha256=sha256_file(p), size_bytes=p.stat().st_size, opset=opset, input_name=name,
        input_shape=shape, input_dtype=dtype, output_names=tuple(o.name for o in graph.output),
        precision=model_precision(model), layout=layout, metadata=metadata.read(model),
        input=image, classes=output_classes(model),
    )
