"""Keras 3 ``.keras`` -> ONNX, through tf2onnx.

First route: ``tf2onnx.convert.from_function`` on a ``tf.function`` of ``model(x, training=False)`` with an
explicit, named ``tf.TensorSpec``. (``tf2onnx.convert.from_keras`` fails on Keras 3 Sequential models with
``KeyError: 'keras_tensor_N'`` on TensorFlow 2.21 / Keras 3.15 / tf2onnx 1.17.) Where that route fails or its
graph is wrong, Keras' own ``model.export(format="onnx")`` is tried. A route's graph is kept only when it has
exactly one image input and the expected output, passes the ONNX checker, and matches Keras on a few inputs
within 1e-3 (4x its own rounding where larger; parity is the precision gate). The route, its check and the versions that made a model are written into its
``metadata_props``.

Two things Keras 3 models need on the way (both handled here, for either route):
* Keras' TensorFlow backend runs grouped and depthwise-as-grouped convolutions (ConvNeXt) inside
  ``tf.function(jit_compile=True)``, since TensorFlow has no CPU kernel for them; tf2onnx cannot convert
  that XLA call. While tracing, they are plain ``Conv2D`` ops, which tf2onnx turns into ``Conv`` with ``group``.
* Tensors a layer computed eagerly (``Normalization``'s mean and variance, EfficientNet) are captured by the
  traced function, and tf2onnx makes every captured tensor a graph input. Those stray inputs become
  constants (or go, where nothing reads them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cnnkit
from cnnkit.choices import InputDtype
from cnnkit.envinfo import package_versions
from cnnkit.errors import ExportError, shorten
from cnnkit.io import atomic_path, check_not_input, check_writable, sha256_file
from cnnkit.graph import metadata as meta
from cnnkit.graph.index import GraphIndex
from cnnkit.graph.metadata import InputDescription
from cnnkit.graph.info import value_dims
from cnnkit.export.simplify import SimplifyReport, simplify_graph
from cnnkit.results.load import TrainRecord, train_record_beside

log = logging.getLogger(__name__)

ROUTE = "tf2onnx.convert.from_function(tf.function(model(x, training=False)), named tf.TensorSpec)"
KERAS_ROUTE = 'keras.Model.export(format="onnx")'
ROUTE_CHECK_SAMPLES = 4  # seeded random images each route's graph is run on, against Keras
ROUTE_CHECK_ATOL = 1e-3  # what a working route must meet (parity is the precision gate)
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
    simplify: bool = True  # fold the input scale into the first conv, static Flatten shape (see cnnkit.export.simplify)
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
        return self.metadata.get(meta.GRAPH_SIMPLIFICATION, "off")

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
    """Convert ``config.model_path`` to ONNX at ``config.output_path``, checked, with metadata. Atomic.

    Routes are tried in order (tf2onnx on a traced function, then Keras' ``model.export``); the first whose
    graph passes every check is kept. When none does, the error lists each route's failure.
    """
    from cnnkit._deps import require_tensorflow, require_tf2onnx
    from cnnkit.keras.build import load_keras_model

    out = Path(config.output_path)
    check_not_input(out, config.model_path)
    check_writable(out, config.force)
    if not 7 <= config.opset <= 21:
        raise ExportError(f"--opset {config.opset} is outside what tf2onnx supports", hint="use 13..18 (default 17)")
    for option, name, example in (("--input-name", config.input_name, "images"),
                                  ("--output-name", config.output_name, "probabilities")):
        if not name.strip():
            raise ExportError(f"{option} is empty", hint=f"name the tensor, e.g. {option} {example}")
    if config.input_name == config.output_name:  # ONNX Runtime would refuse the graph: "Duplicate definition of name"
        raise ExportError(f"--input-name and --output-name are both '{config.input_name}': an ONNX graph names each tensor once",
                          hint="choose two names, e.g. --input-name images --output-name probabilities")
    model_path = Path(config.model_path)
    keras_model = load_keras_model(model_path)
    _check_io(keras_model, model_path)
    require_tensorflow()
    require_tf2onnx()
    import onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    versions = package_versions()
    record = train_record_beside(model_path)
    feed = _preprocess_record(config, record, keras_model)  # the record's JSON, or None
    attempts: list[str] = []
    chosen = None
    for route, convert in ((ROUTE, _convert_with_tf2onnx), (KERAS_ROUTE, _convert_with_keras_export)):
        try:
            model_proto = convert(keras_model, config, versions)
            simplified = _finish_graph(model_proto, keras_model, config)  # None: simplification off
            check = _check_against_keras(model_proto, keras_model, config, feed)
        except ExportError as exc:
            attempts.append(f"{_route_label(route)}: {exc.one_line()}")
            log.info("export route %s failed: %s", route, exc.one_line())
            continue
        chosen = (route, model_proto, simplified, check)
        break
    if chosen is None:
        messages = {a.split(": ", 1)[1] for a in attempts}
        if len(messages) == 1:  # the same failure on every route: say it once
            raise ExportError(f"{model_path}: {messages.pop()} (routes tried: tf2onnx, Keras' model.export)")
        raise ExportError(f"{model_path}: no conversion route works: " + "; ".join(attempts))
    route, model_proto, simplified, check = chosen

    dataset = record.dataset.get("name", "unknown") if record else "unknown"
    class_names = _class_names(dataset, int(keras_model.outputs[0].shape[-1]))
    steps = tuple(_preprocessing(keras_model))
    image = InputDescription(layout="NHWC", dtype=config.input_dtype.value, value_range=_value_range(record),
                             preprocessing_layers=steps, preprocess=feed)
    spec = record.spec.get("name", keras_model.name) if record else keras_model.name
    props = {
        meta.CNNKIT_VERSION: cnnkit.__version__,
        meta.SOURCE_MODEL: model_path.name,
        meta.SOURCE_SHA256: sha256_file(model_path),
        meta.SPEC: spec,
        meta.DATASET: dataset,
        meta.CLASS_NAMES: json.dumps(class_names),
        **image.to_metadata(),
        meta.CONVERSION_ROUTE: route,
        meta.CONVERSION_CHECK: json.dumps(check),
        **({meta.CONVERSION_ROUTES_FAILED: json.dumps(attempts)} if attempts else {}),
        meta.GRAPH_SIMPLIFICATION: simplified.describe() if simplified else "off",
        # The input scale goes into the first convolution: the Rescaling layers' work is done there now.
        meta.FOLDED_LAYERS: json.dumps(sorted(meta.rescale_layers(steps) if simplified and simplified.folded_scales
                                              else ())),
        meta.OPSET: str(config.opset),
        **{meta.version_key(name): str(versions.get(name)) for name in meta.VERSIONED_PACKAGES},
    }
    meta.write(model_proto, props)
    model_proto.doc_string = f"{spec} exported by cnnkit {cnnkit.__version__} from {model_path.name}"

    keras_params = int(keras_model.count_params())
    onnx_params = onnx_param_count(model_proto)
    note = "equal"
    if keras_params != onnx_params:
        folded = sorted({_FOLDED_LAYERS[type(layer).__name__] + f" ({type(layer).__name__})"
                         for layer in _all_layers(keras_model) if type(layer).__name__ in _FOLDED_LAYERS})
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
        input_shape=value_dims(graph.input[0]),
        output_shape=value_dims(graph.output[0]),
        keras_params=keras_params,
        onnx_params=onnx_params,
        params_note=note,
        size_bytes=out.stat().st_size,
        metadata=props,
    )


def _route_label(route: str) -> str:
    return "tf2onnx" if route == ROUTE else "keras model.export"


def _all_layers(model: Any) -> list[Any]:
    """Every layer, nested models' layers included (a user's head on a keras.applications base)."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out += _all_layers(layer)
    return out


def _input_spec(keras_model: Any, config: ExportConfig) -> Any:
    import tensorflow as tf

    in_shape = (None, *(int(d) for d in keras_model.inputs[0].shape[1:]))
    tf_dtype = tf.uint8 if config.input_dtype is InputDtype.UINT8 else tf.float32
    return tf.TensorSpec(in_shape, tf_dtype, name=config.input_name)


def _convert_with_tf2onnx(keras_model: Any, config: ExportConfig, versions: dict[str, Any]) -> Any:
    """tf2onnx on a traced ``tf.function``; captured tensors folded into constants."""
    import tensorflow as tf
    import tf2onnx

    from cnnkit._deps import capture_native_stderr

    spec = _input_spec(keras_model, config)

    @tf.function(input_signature=[spec])
    def serve(x: Any) -> dict[str, Any]:
        if config.input_dtype is InputDtype.UINT8:
            x = tf.cast(x, tf.float32)  # raw pixels in, the model's own Rescaling does the rest
        return {config.output_name: keras_model(x, training=False)}

    with _grouped_conv_without_xla(), _UnsupportedOps.collect(versions) as unsupported:
        try:
            with capture_native_stderr(replay_on_error=False) as log_text:
                concrete = serve.get_concrete_function()
                model_proto, _ = tf2onnx.convert.from_function(
                    serve, input_signature=[spec], opset=config.opset, custom_op_handlers=_CUSTOM_OP_HANDLERS
                )
        except Exception as exc:  # noqa: BLE001 (tf2onnx raises many kinds)
            raise ExportError(f"tf2onnx could not convert it: {_conversion_failure(exc, log_text.text)}") from None
    unsupported.raise_if_any()
    _fold_captured_inputs(model_proto, concrete, n_inputs=1)
    return model_proto


def _convert_with_keras_export(keras_model: Any, config: ExportConfig, versions: dict[str, Any]) -> Any:
    """Keras' own ``model.export(format="onnx")`` (tf2onnx inside, on Keras' export archive)."""
    import tempfile

    import onnx

    from cnnkit._deps import capture_native_stderr

    if config.input_dtype is not InputDtype.FLOAT32:
        raise ExportError("Keras' route exports float32 inputs only")
    spec = _input_spec(keras_model, config)
    with tempfile.TemporaryDirectory(prefix="cnnkit-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        with _grouped_conv_without_xla(), _UnsupportedOps.collect(versions) as unsupported:
            try:
                with capture_native_stderr(replay_on_error=False) as log_text:
                    keras_model.export(str(path), format="onnx", verbose=False, input_signature=[spec],
                                       opset_version=config.opset)
            except Exception as exc:  # noqa: BLE001
                raise ExportError(f"model.export failed: {_conversion_failure(exc, log_text.text)}") from None
        unsupported.raise_if_any()
        model_proto = onnx.load(str(path))
    graph = model_proto.graph
    if len(graph.output) == 1 and graph.output[0].name != config.output_name:
        _rename_tensor(model_proto, graph.output[0].name, config.output_name)
    return model_proto


def _finish_graph(model_proto: Any, keras_model: Any, config: ExportConfig) -> SimplifyReport | None:
    """Dynamic batch, I/O and checker checks, simplification; returns what simplification did (None: off)."""
    import onnx

    _drop_unread_inputs(model_proto, config.input_name)
    _check_onnx_io(model_proto, keras_model, config)
    _name_fused_nodes(model_proto)
    _set_dynamic_batch(model_proto)
    simplified = simplify_graph(model_proto) if config.simplify else None
    try:
        onnx.checker.check_model(model_proto, full_check=True)
        onnx.shape_inference.infer_shapes(model_proto, check_type=True, strict_mode=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"the exported graph fails the ONNX checker: {shorten(exc, 300)}") from None
    return simplified


def _check_onnx_io(model_proto: Any, keras_model: Any, config: ExportConfig) -> None:
    """The ONNX graph itself has one image input and the one expected output (not only the Keras model)."""
    graph = model_proto.graph
    for kind, values, name, tensor in (("input", graph.input, config.input_name, keras_model.inputs[0]),
                                       ("output", graph.output, config.output_name, keras_model.outputs[0])):
        found = [(v.name, value_dims(v)) for v in values]
        want = tuple(int(d) for d in tensor.shape[1:])
        if len(found) != 1 or found[0][0] != name or tuple(found[0][1][1:]) != want:
            listed = ", ".join(f"{n} {list(d)}" for n, d in found) or "none"
            raise ExportError(f"the ONNX graph should have one {kind} {name} [batch, {', '.join(map(str, want))}], "
                              f"it has {len(found)}: {listed}")


def _check_against_keras(model_proto: Any, keras_model: Any, config: ExportConfig, feed: str | None
                         ) -> dict[str, Any]:
    """Run the graph on a few seeded random images, fed as its preprocessing record says, and compare with
    Keras within 1e-3 (or 4x the graph's own rounding: optimisations on vs off)."""
    import numpy as np

    from cnnkit.parity.check import KERAS_ONNX_RTOL
    from cnnkit.parity.rounding import ROUNDING_HEADROOM, rounding_floor

    shape = tuple(int(d) for d in keras_model.inputs[0].shape[1:])
    x = np.random.default_rng(0).integers(0, 256, (ROUTE_CHECK_SAMPLES, *shape)).astype(np.float32)
    if feed:
        from cnnkit.data.preprocess import PreprocessRecord

        x = PreprocessRecord.from_json(feed).normalize(x).astype(np.float32)
    try:
        floor, outs = rounding_floor(model_proto.SerializeToString(), x, label="exported graph")
    except Exception as exc:  # noqa: BLE001 (ONNX Runtime rejects a broken graph in many ways)
        raise ExportError(f"ONNX Runtime cannot run the exported graph: {shorten(exc, 300)}") from None
    got = outs[config.output_name].astype(np.float64)
    want = np.asarray(keras_model(x, training=False), dtype=np.float64)
    diff = np.abs(got - want)
    # A check that the route works, not parity's precision gate: a broken conversion (a lost normalisation, wrong
    # weights) moves outputs by 1e-2 and more; a deep model's own float32 rounding (graph optimisations on vs
    # off, and TensorFlow's kernels vs ONNX Runtime's) by up to ~1e-4, more in a network that amplifies it.
    atol = max(ROUTE_CHECK_ATOL, ROUNDING_HEADROOM * floor)
    excess = float(np.max(diff - KERAS_ONNX_RTOL * np.abs(want)))
    check = {"samples": ROUTE_CHECK_SAMPLES, "max_abs_diff": float(diff.max()), "atol": atol,
             "rtol": KERAS_ONNX_RTOL, "rounding_floor": floor}
    if not np.isfinite(diff).all() or excess > atol:
        raise ExportError(f"its outputs differ from Keras by up to {diff.max():.3g} on {ROUTE_CHECK_SAMPLES} random "
                          f"images (allowed {atol:.2g} + {KERAS_ONNX_RTOL:g}*|Keras|)")
    return check


def _fold_captured_inputs(model_proto: Any, concrete: Any, n_inputs: int) -> None:
    """Turn graph inputs that tf2onnx made of captured tensors into initializers; drop those nothing reads.

    A concrete function's inputs are its signature's, then one placeholder per captured tensor, in the order
    of ``captured_inputs``. Variables are frozen by tf2onnx; an eagerly computed tensor (``Normalization``'s
    broadcast mean and variance) stays a placeholder, and tf2onnx lists it as a graph input.
    """
    from onnx import numpy_helper

    captured = {}
    for placeholder, value in zip(concrete.inputs[n_inputs:], concrete.captured_inputs, strict=False):
        if placeholder.dtype.name != "resource":
            captured[placeholder.name] = value
    read = GraphIndex.of(model_proto).readers
    for inp in list(model_proto.graph.input):
        if inp.name not in captured:
            continue
        if inp.name in read:
            model_proto.graph.initializer.append(numpy_helper.from_array(captured[inp.name].numpy(), inp.name))
        model_proto.graph.input.remove(inp)


_WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def _name_fused_nodes(model_proto: Any) -> None:
    """Name each convolution or matrix product after the Keras layer whose weights it holds.

    tf2onnx folds a BatchNormalization into the convolution before it and names the result after the
    BatchNormalization (``model/bn_Conv1_1/batchnorm/mul_1``), or gives it a generated name (``Conv__22``)
    where it also absorbed a transpose. The node becomes ``model/<its scope>/<conv layer>+<bn layer>/Conv``:
    the convolution's Keras name, and still the scope whose output it computes (parity maps layers by scope).
    """
    used = {node.name for node in model_proto.graph.node}
    for node in model_proto.graph.node:
        if node.op_type not in _WEIGHTED_OPS or len(node.input) < 2:
            continue
        weight_scope = _layer_scope(node.input[1])
        if weight_scope is None:
            continue
        node_scope = _layer_scope(node.name + "/op")
        if node_scope == weight_scope:
            continue
        out_scope = node_scope or (_layer_scope(node.input[2]) if len(node.input) > 2 else None) or weight_scope
        label = _layer_name(weight_scope) + (f"+{_layer_name(out_scope)}" if out_scope != weight_scope else "")
        name = base = f"{node.input[1].split('/')[0]}/{out_scope}/{label}/{node.op_type}"
        k = 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        node.name = name


def _layer_scope(tensor_or_node: str) -> str | None:
    """``layer_1`` in ``model_1/layer_1/op:0`` (the Keras layer's TensorFlow scope); None without one."""
    parts = tensor_or_node.split("/")
    return parts[1] if len(parts) >= 3 else None


def _layer_name(scope: str) -> str:
    return re.sub(r"_\d+$", "", scope)


def _drop_unread_inputs(model_proto: Any, image_input: str) -> None:
    """Remove graph inputs besides the image that no node reads (captured constants that TensorFlow's
    optimiser already folded in: both routes leave Normalization's statistics behind as such inputs)."""
    read = GraphIndex.of(model_proto).readers
    for inp in list(model_proto.graph.input):
        if inp.name != image_input and inp.name not in read:
            model_proto.graph.input.remove(inp)


@contextlib.contextmanager
def _grouped_conv_without_xla() -> Iterator[None]:
    """While tracing, grouped convolutions are plain ``Conv2D`` ops instead of Keras' XLA-compiled call.

    Keras' TensorFlow backend wraps a convolution whose kernel has fewer input channels than the input (a
    grouped or channel-wise convolution, ConvNeXt's) in ``tf.function(jit_compile=True)``, because TensorFlow
    has no CPU kernel for it. tf2onnx cannot convert that call (``StatefulPartitionedCall``). Tracing runs no
    kernel, and tf2onnx turns the plain op into ``Conv`` with ``group``.
    """
    try:
        from keras.src.backend import standardize_data_format
        from keras.src.backend.tensorflow import nn as tf_nn
    except ImportError:  # another Keras layout: leave it alone
        yield
        return
    original = tf_nn.conv

    def conv(inputs: Any, kernel: Any, strides: Any = 1, padding: str = "valid", data_format: Any = None,
             dilation_rate: Any = 1) -> Any:
        fmt = standardize_data_format(data_format)
        channels = inputs.shape[-1] if fmt == "channels_last" else inputs.shape[1]
        if channels == kernel.shape[-2] or len(inputs.shape) != 4:
            return original(inputs, kernel, strides, padding, data_format, dilation_rate)
        import tensorflow as tf

        return tf.nn.convolution(inputs, kernel, strides, padding.upper(),
                                 data_format=tf_nn._convert_data_format(fmt, 4), dilations=dilation_rate)

    tf_nn.conv = conv
    try:
        yield
    finally:
        tf_nn.conv = original


def _rename_tensor(model_proto: Any, old: str, new: str) -> None:
    for node in model_proto.graph.node:
        for seq in (node.input, node.output):
            for k, name in enumerate(seq):
                if name == old:
                    seq[k] = new
    for vi in list(model_proto.graph.output) + list(model_proto.graph.value_info):
        if vi.name == old:
            vi.name = new


class _UnsupportedOps(logging.Handler):
    """Collects what tf2onnx reports as unsupported (it logs them and carries on, leaving a broken graph)."""

    def __init__(self, versions: dict[str, Any] | None = None) -> None:
        super().__init__(level=logging.ERROR)
        self.ops: list[tuple[str, str]] = []  # (node name, op type)
        self.versions = versions or {}

    @classmethod
    @contextlib.contextmanager
    def collect(cls, versions: dict[str, Any]) -> Iterator[_UnsupportedOps]:
        handler = cls(versions)
        tf2onnx_log = logging.getLogger("tf2onnx")
        tf2onnx_log.addHandler(handler)
        try:
            yield handler
        finally:
            tf2onnx_log.removeHandler(handler)

    def raise_if_any(self) -> None:
        if self.ops:
            raise ExportError(
                f"tf2onnx {self.versions.get('tf2onnx')} cannot convert {self.describe()}",
                hint="replace that layer or activation with a supported one, or try another --opset",
            )

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
    from cnnkit.data.datasets import CLASS_NAMES, DatasetName

    try:
        names = list(CLASS_NAMES[DatasetName(dataset)])
    except ValueError:
        names = []
    return names if len(names) == n else [str(i) for i in range(n)]


def _preprocess_record(config: ExportConfig, record: TrainRecord | None, keras_model: Any) -> str | None:
    """The preprocessing record (``cnnkit.data.preprocess``) as JSON for the metadata: how to feed the exported
    graph; None where cnnkit does not feed the input (no preset fits, not an image)."""
    from cnnkit.data.preprocess import preset, preset_for_value_range

    chosen = preset(config.preprocess) if config.preprocess else preset_for_value_range(_value_range(record))
    if chosen is None:
        return None
    shape = tuple(keras_model.inputs[0].shape[1:])
    if len(shape) != 3 or shape[-1] not in (1, 3):
        return None  # not an image input cnnkit feeds (e.g. Conv1D signals)
    h, w, c = (int(d) for d in shape)
    bound = chosen.bind(h, w, c, "NHWC", config.input_dtype.value)
    return replace(bound, source="model metadata").to_json()


def _value_range(record: TrainRecord | None) -> tuple[float, float]:
    """The input value range the spec trained on (``train.json``); raw pixels 0..255 when nothing says."""
    vr = (record.spec.get("input") or {}).get("value_range") if record else None
    return tuple(vr) if vr else (0.0, 255.0)


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
    return f"{type(exc).__name__}{where}: {shorten(exc, 200)}"
