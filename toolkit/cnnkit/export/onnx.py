"""Keras 3 ``.keras`` -> ONNX, through tf2onnx, checked, with metadata.

The conversion routes are tried in order (``cnnkit.export.keras_routes``: tf2onnx on a traced function, then
Keras' own ``model.export(format="onnx")``). A route's graph is kept only when it has exactly one image input and
the expected output, passes the ONNX checker, and matches Keras on a few inputs within 1e-3 (4x its own rounding
where larger; parity is the precision gate; ``cnnkit.export.graph_checks``). The route, its check and the
versions that made a model are written into its ``metadata_props``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cnnkit
from cnnkit.choices import InputDtype
from cnnkit.envinfo import package_versions
from cnnkit.errors import ExportError
from cnnkit.io import atomic_path, check_not_input, check_writable, sha256_file
from cnnkit.graph import metadata as meta
from cnnkit.graph.metadata import InputDescription
from cnnkit.graph.info import value_dims
from cnnkit.export.graph_checks import check_against_keras, finish_graph
from cnnkit.export.keras_routes import KERAS_ROUTE, ROUTE, convert_with_keras_export, convert_with_tf2onnx, route_label
from cnnkit.results.load import TrainRecord, train_record_beside

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
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


def export_onnx(config: ExportConfig, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Convert ``config.model_path`` to ONNX at ``config.output_path``, checked, with metadata. Atomic.

    Routes are tried in order (tf2onnx on a traced function, then Keras' ``model.export``); the first whose
    graph passes every check is kept. When none does, the error lists each route's failure. ``progress`` hears
    each step that takes seconds (loading TensorFlow and the model, tracing and converting, checking) as it starts.
    """
    say = progress or (lambda _message: None)
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
    keras_model = load_keras_model(model_path, progress=say)
    _check_io(keras_model, model_path)
    require_tensorflow()
    if "tf2onnx" not in sys.modules:
        say("loading tf2onnx")
    require_tf2onnx()
    import onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    versions = package_versions()
    record = train_record_beside(model_path)
    feed = _preprocess_record(config, record, keras_model)  # the record's JSON, or None
    attempts: list[str] = []
    chosen = None
    for route, convert in ((ROUTE, convert_with_tf2onnx), (KERAS_ROUTE, convert_with_keras_export)):
        try:
            say(f"tracing the Keras model and converting it to ONNX ({route_label(route)})")
            model_proto = convert(keras_model, config, versions)
            simplified = finish_graph(model_proto, keras_model, config)  # None: simplification off
            say("checking the ONNX graph (onnx.checker, shape inference, ONNX Runtime vs Keras)")
            check = check_against_keras(model_proto, keras_model, config, feed)
        except ExportError as exc:
            attempts.append(f"{route_label(route)}: {exc.one_line()}")
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


def _all_layers(model: Any) -> list[Any]:
    """Every layer, nested models' layers included (a user's head on a keras.applications base)."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out += _all_layers(layer)
    return out


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
