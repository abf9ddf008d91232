"""Keras 3 ``.keras`` -> ONNX, through tf2onnx.

Route: ``tf2onnx.convert.from_function`` on a ``tf.function`` of ``model(x, training=False)`` with an
explicit, named ``tf.TensorSpec``. (``tf2onnx.convert.from_keras`` fails on Keras 3 Sequential models with
``KeyError: 'keras_tensor_N'`` on TensorFlow 2.21 / Keras 3.15 / tf2onnx 1.17.) The route and the versions
that made a model are written into its ``metadata_props``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cnnkit
from cnnkit.choices import InputDtype
from cnnkit.envinfo import package_versions
from cnnkit.errors import ExportError
from cnnkit.io import atomic_path, check_writable, sha256_file

ROUTE = "tf2onnx.convert.from_function(tf.function(model(x, training=False)), named tf.TensorSpec)"
DEFAULT_OPSET = 17
BATCH_DIM = "batch"
# Keras layers whose parameters tf2onnx folds into neighbours, so ONNX counts fewer.
_FOLDED_LAYERS = {"BatchNormalization": "folded into the preceding layer", "Normalization": "folded into constants"}


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how. Defaults: opset 17, float32 input named ``images``, output ``probabilities``."""

    model_path: Path
    output_path: Path
    opset: int = DEFAULT_OPSET
    input_dtype: InputDtype = InputDtype.FLOAT32
    input_name: str = "images"
    output_name: str = "probabilities"
    force: bool = False
    simplify: bool = True  # fold the input scale into the first conv, static Flatten shape (see cnnkit.simplify)
    preprocess: str | None = None  # preset recorded in the metadata; None: from the spec's value range (raw 0..255)


@dataclass(frozen=True)
class ExportResult:
    output_path: Path
    opset: int
    input_dtype: InputDtype
    input_shape: tuple[Any, ...]  # with "batch" for the dynamic dimension
    output_shape: tuple[Any, ...]
    keras_params: int
    onnx_params: int
    params_note: str  # why the counts differ, or "equal"
    size_bytes: int
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def simplification(self) -> str:
        return self.metadata.get("graph_simplification", "off")

    @property
    def params_match(self) -> bool:
        return self.keras_params == self.onnx_params

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_path": str(self.output_path),
            "opset": self.opset,
            "input_dtype": self.input_dtype.value,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "keras_params": self.keras_params,
            "onnx_params": self.onnx_params,
            "params_match": self.params_match,
            "params_note": self.params_note,
            "size_bytes": self.size_bytes,
            "simplification": self.simplification,
            "metadata": self.metadata,
        }


def onnx_param_count(model: Any) -> int:
    """Elements of the floating-point initializers of rank >= 1: weights and biases.

    Rank-0 constants (the Rescaling scale and offset, say) are not parameters, as in Keras.
    """
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    total = 0
    for init in model.graph.initializer:
        if init.data_type in floats and len(init.dims) >= 1:
            n = 1
            for d in init.dims:
                n *= d
            total += n
    return total


def _training_record(model_path: Path) -> dict[str, Any]:
    """``train.json`` beside the model, if cnnkit trained it: spec and dataset names for the metadata."""
    record = model_path.parent / "train.json"
    try:
        data = json.loads(record.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _preprocessing(keras_model: Any) -> list[dict[str, Any]]:
    steps = []
    for layer in keras_model.layers:
        cls = type(layer).__name__
        if cls == "Rescaling":
            cfg = layer.get_config()
            steps.append({"layer": layer.name, "op": "rescale", "scale": cfg["scale"], "offset": cfg["offset"]})
        elif cls == "Normalization":
            steps.append({"layer": layer.name, "op": "normalize", "axis": layer.get_config().get("axis")})
    return steps


def _check_io(keras_model: Any, path: Path) -> None:
    if len(keras_model.inputs) != 1 or len(keras_model.outputs) != 1:
        raise ExportError(
            f"{path}: cnnkit exports models with one input and one output; this one has "
            f"{len(keras_model.inputs)} input(s) and {len(keras_model.outputs)} output(s)"
        )
    shape = tuple(keras_model.inputs[0].shape)
    if len(shape) < 3 or any(d is None for d in shape[1:]):
        raise ExportError(
            f"{path}: input shape {shape} is not a fixed-size image tensor (batch, height, width, channels)",
            hint="give the model a fixed input shape, e.g. keras.Input(shape=(28, 28, 1))",
        )


def export_onnx(config: ExportConfig) -> ExportResult:
    """Convert ``config.model_path`` to ONNX at ``config.output_path``, checked, with metadata. Atomic."""
    from cnnkit._deps import capture_native_stderr, require_tensorflow, require_tf2onnx
    from cnnkit.build import load_keras_model

    out = Path(config.output_path)
    check_writable(out, config.force)
    if not 7 <= config.opset <= 21:
        raise ExportError(f"--opset {config.opset} is outside what tf2onnx supports", hint="use 13..18 (default 17)")
    model_path = Path(config.model_path)
    keras_model = load_keras_model(model_path)
    _check_io(keras_model, model_path)

    tf = require_tensorflow()
    tf2onnx = require_tf2onnx()
    import onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    in_shape = (None, *(int(d) for d in keras_model.inputs[0].shape[1:]))
    tf_dtype = tf.uint8 if config.input_dtype is InputDtype.UINT8 else tf.float32
    spec = tf.TensorSpec(in_shape, tf_dtype, name=config.input_name)

    @tf.function(input_signature=[spec])
    def serve(x: Any) -> dict[str, Any]:
        if config.input_dtype is InputDtype.UINT8:
            x = tf.cast(x, tf.float32)  # raw pixels in, the model's own Rescaling does the rest
        return {config.output_name: keras_model(x, training=False)}

    versions = package_versions()
    unsupported = _UnsupportedOps()
    tf2onnx_log = logging.getLogger("tf2onnx")
    tf2onnx_log.addHandler(unsupported)
    try:
        with capture_native_stderr(replay_on_error=False) as log:
            model_proto, _ = tf2onnx.convert.from_function(
                serve, input_signature=[spec], opset=config.opset, custom_op_handlers=_CUSTOM_OP_HANDLERS
            )
    except Exception as exc:  # noqa: BLE001 (tf2onnx raises many kinds)
        raise ExportError(f"{model_path}: tf2onnx could not convert it: {_conversion_failure(exc, log.text)}") from None
    finally:
        tf2onnx_log.removeHandler(unsupported)
    if unsupported.ops:
        raise ExportError(
            f"{model_path}: tf2onnx {versions.get('tf2onnx')} cannot convert {unsupported.describe()}",
            hint="replace that layer or activation with a supported one, or try another --opset",
        )

    _set_dynamic_batch(model_proto)
    simplified = "off"
    if config.simplify:
        from cnnkit.simplify import simplify_graph

        simplified = simplify_graph(model_proto).describe()
    record = _training_record(model_path)
    dataset = record.get("dataset", {}).get("name", "unknown")
    class_names = _class_names(dataset, int(keras_model.outputs[0].shape[-1]))
    metadata = {
        "cnnkit_version": cnnkit.__version__,
        "source_model": model_path.name,
        "source_sha256": sha256_file(model_path),
        "spec": record.get("spec", {}).get("name", keras_model.name),
        "dataset": dataset,
        "class_names": json.dumps(class_names),
        "input_layout": "NHWC",
        "input_dtype": config.input_dtype.value,
        "input_value_range": json.dumps(_value_range(record)),
        "preprocessing": json.dumps(_preprocessing(keras_model)),
        **_preprocess_record(config, record, keras_model),
        "conversion_route": ROUTE,
        "graph_simplification": simplified,
        "opset": str(config.opset),
        **{f"{name}_version": str(versions.get(name)) for name in ("tensorflow", "keras", "tf2onnx", "onnx")},
    }
    onnx.helper.set_model_props(model_proto, metadata)
    model_proto.doc_string = f"{metadata['spec']} exported by cnnkit {cnnkit.__version__} from {model_path.name}"

    try:
        onnx.checker.check_model(model_proto, full_check=True)
        onnx.shape_inference.infer_shapes(model_proto, check_type=True, strict_mode=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{model_path}: the exported graph fails the ONNX checker: {' '.join(str(exc).split())[:300]}") from None

    keras_params = int(keras_model.count_params())
    onnx_params = onnx_param_count(model_proto)
    note = "equal"
    if keras_params != onnx_params:
        folded = sorted({_FOLDED_LAYERS[type(layer).__name__] + f" ({type(layer).__name__})"
                         for layer in keras_model.layers if type(layer).__name__ in _FOLDED_LAYERS})
        # tf2onnx's optimizer drops an Add of an all-zero bias (an untrained or bias-free model).
        zeros = sum(int(w.size) for w in keras_model.get_weights() if w.size and not w.any())
        if 0 < keras_params - onnx_params <= zeros:
            folded.append(f"consistent with all-zero weight tensors ({zeros:,} elements) removed by tf2onnx's optimizer")
        note = f"differ by {keras_params - onnx_params:+,}: " + ("; ".join(folded) if folded else "unexplained")
        if not folded:
            raise ExportError(
                f"{model_path}: the ONNX graph has {onnx_params:,} parameters, Keras {keras_params:,}: a conversion lost or invented weights"
            )

    with atomic_path(out, force=config.force) as tmp:
        onnx.save_model(model_proto, str(tmp))
    graph = model_proto.graph
    return ExportResult(
        output_path=out,
        opset=config.opset,
        input_dtype=config.input_dtype,
        input_shape=_dims(graph.input[0]),
        output_shape=_dims(graph.output[0]),
        keras_params=keras_params,
        onnx_params=onnx_params,
        params_note=note,
        size_bytes=out.stat().st_size,
        metadata=metadata,
    )


class _UnsupportedOps(logging.Handler):
    """Collects what tf2onnx reports as unsupported (it logs them and carries on, leaving a broken graph)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.ops: list[tuple[str, str]] = []  # (node name, op type)

    def emit(self, record: logging.LogRecord) -> None:
        m = re.search(r"Tensorflow op \[([^:\]]+): (\w+)\] is not supported", record.getMessage())
        if m:
            self.ops.append((m.group(1), m.group(2)))

    def describe(self) -> str:
        parts = []
        for node, op in self.ops:
            scope = node.split("/")
            layer = re.sub(r"_\d+$", "", scope[1]) if len(scope) > 2 else node
            parts.append(f"op {op} in layer {layer} (node {node})")
        return "; ".join(parts)


def _erfc_handler(ctx: Any, node: Any, name: str, args: Any) -> None:
    """erfc(x) = 1 - erf(x): Keras 3's exact GELU lowers to Erfc, which tf2onnx 1.17 has no converter for."""
    import numpy as np
    from onnx import helper

    dtype = helper.tensor_dtype_to_np_dtype(ctx.get_dtype(node.output[0]))
    node.type = "Erf"
    one = ctx.make_const(f"{node.name}/one", np.array(1, dtype=dtype))
    sub = ctx.insert_new_node_on_output("Sub", node.output[0], name=f"{node.name}/one_minus")
    ctx.replace_inputs(sub, [one.output[0], node.output[0]])
    ctx.copy_shape(node.output[0], sub.output[0])
    ctx.set_dtype(sub.output[0], ctx.get_dtype(node.output[0]))


_CUSTOM_OP_HANDLERS = {"Erfc": (_erfc_handler, [])}


def _class_names(dataset: str, n: int) -> list[str]:
    from cnnkit.datasets import CLASS_NAMES, DatasetName

    try:
        names = list(CLASS_NAMES[DatasetName(dataset)])
    except ValueError:
        names = []
    return names if len(names) == n else [str(i) for i in range(n)]


def _preprocess_record(config: ExportConfig, record: dict[str, Any], keras_model: Any) -> dict[str, str]:
    """The preprocessing record (``cnnkit.data.preprocess``) as metadata: how to feed the exported graph."""
    from cnnkit.data.preprocess import METADATA_KEY, preset, preset_for_value_range

    chosen = preset(config.preprocess) if config.preprocess else preset_for_value_range(_value_range(record))
    if chosen is None:
        return {}
    shape = tuple(keras_model.inputs[0].shape[1:])
    if len(shape) != 3 or shape[-1] not in (1, 3):
        return {}  # not an image input cnnkit feeds (e.g. Conv1D signals)
    h, w, c = (int(d) for d in shape)
    bound = chosen.bind(h, w, c, "NHWC", config.input_dtype.value)
    return {METADATA_KEY: replace(bound, source="model metadata").to_json()}


def _value_range(record: dict[str, Any]) -> list[float]:
    vr = record.get("spec", {}).get("input", {}).get("value_range")
    return list(vr) if vr else [0.0, 255.0]


def _dims(value_info: Any) -> tuple[Any, ...]:
    return tuple(d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim)


def _set_dynamic_batch(model_proto: Any) -> None:
    """Name the leading dimension of every graph input and output ``batch``."""
    for vi in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_DIM


def _conversion_failure(exc: Exception, log: str) -> str:
    """Name the op or layer that failed, from tf2onnx's exception and log."""
    unsupported = re.search(r"Unsupported ops: Counter\(\{([^}]*)\}\)", log + str(exc))
    if unsupported:
        return f"unsupported TensorFlow op(s) {unsupported.group(1)}"
    node = re.search(r"(?:node|Node) ([\w/.-]+)", str(exc))
    where = f" at {node.group(1)}" if node else ""
    return f"{type(exc).__name__}{where}: {' '.join(str(exc).split())[:200]}"
