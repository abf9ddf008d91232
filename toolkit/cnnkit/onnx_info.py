"""What an ``.onnx`` file is: its input and outputs, precision, metadata. Reads the file, runs nothing."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.errors import ModelFileError

_INT8_STATIC_OPS = {"QLinearConv", "QLinearMatMul", "QGemm", "QuantizeLinear", "DequantizeLinear"}
_INT8_DYNAMIC_OPS = {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}


@dataclass(frozen=True)
class OnnxModelInfo:
    path: str
    sha256: str
    size_bytes: int
    opset: int
    input_name: str
    input_shape: tuple[Any, ...]  # symbolic dimensions as strings
    input_dtype: str  # numpy name: float32, uint8, float16
    output_names: tuple[str, ...]
    precision: str  # fp32, fp16, int8-static, int8-dynamic, mixed
    layout: str  # NHWC or NCHW (guessed from the channel dimension)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The per-sample input shape (batch left out), e.g. (28, 28, 1)."""
        return tuple(int(d) for d in self.input_shape[1:])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 10: "float16", 11: "float64", 16: "bfloat16"}


def describe_onnx(path: str | os.PathLike[str], require_image: bool = True) -> OnnxModelInfo:
    """Read ``path`` and describe it; a missing or corrupt file, or (with ``require_image``) a model whose
    one input is not a fixed-size image tensor ``(batch, H, W, C)`` or ``(batch, C, H, W)``, is a one-line error."""
    import onnx

    from cnnkit.io import sha256_file

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model file {p} not found")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 (protobuf's DecodeError and friends)
        raise ModelFileError(f"cannot read {p} as ONNX: {type(exc).__name__}", hint="is it a complete .onnx file?") from None
    graph = model.graph
    initializer_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    if len(inputs) != 1 or not graph.output:
        raise ModelFileError(f"{p}: cnnkit runs models with one input and at least one output; this one has "
                             f"{len(inputs)} input(s) and {len(graph.output)} output(s)")
    inp = inputs[0]
    ttype = inp.type.tensor_type
    shape = tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in ttype.shape.dim)
    layout = "NHWC"
    if require_image:
        fixed = shape[1:]
        if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in fixed):
            raise ModelFileError(
                f"{p}: input {inp.name} has shape {list(shape)}, not an image tensor (batch, height, width, channels)",
                hint="cnnkit benchmarks and evaluates image models",
            )
        if fixed[0] in (1, 3, 4) and fixed[2] not in (1, 3, 4):
            layout = "NCHW"
    ops = {n.op_type for n in graph.node}
    init_types = {i.data_type for i in graph.initializer if len(i.dims) >= 1}
    if ops & _INT8_DYNAMIC_OPS:
        precision = "int8-dynamic"
    elif ops & _INT8_STATIC_OPS:
        precision = "int8-static"
    elif 10 in init_types and 1 in init_types:
        precision = "mixed"
    elif 10 in init_types:
        precision = "fp16"
    else:
        precision = "fp32"
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxModelInfo(
        path=str(p), sha256=sha256_file(p), size_bytes=p.stat().st_size, opset=opset, input_name=inp.name,
        input_shape=shape, input_dtype=_DTYPES.get(ttype.elem_type, str(ttype.elem_type)),
        output_names=tuple(o.name for o in graph.output), precision=precision, layout=layout,
        metadata={m.key: m.value for m in model.metadata_props},
    )
