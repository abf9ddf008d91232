"""The two routes from a Keras 3 model to an ONNX graph, both through tf2onnx.

First route (``ROUTE``): ``tf2onnx.convert.from_function`` on a ``tf.function`` of ``model(x, training=False)``
with an explicit, named ``tf.TensorSpec``. (``tf2onnx.convert.from_keras`` fails on Keras 3 Sequential models with
``KeyError: 'keras_tensor_N'`` on TensorFlow 2.21 / Keras 3.15 / tf2onnx 1.17.) Second (``KERAS_ROUTE``): Keras'
own ``model.export(format="onnx")``. ``cnnkit.export.onnx.export_onnx`` tries them in that order.

Two things Keras 3 models need on the way (both handled here, for either route):
* Keras' TensorFlow backend runs grouped and depthwise-as-grouped convolutions (ConvNeXt) inside
  ``tf.function(jit_compile=True)``, since TensorFlow has no CPU kernel for them; tf2onnx cannot convert
  that XLA call. While tracing, they are plain ``Conv2D`` ops, which tf2onnx turns into ``Conv`` with ``group``.
* Tensors a layer computed eagerly (``Normalization``'s mean and variance, EfficientNet) are captured by the
  traced function, and tf2onnx makes every captured tensor a graph input. Those stray inputs become
  constants (or go, where nothing reads them: ``cnnkit.export.graph_checks``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.choices import InputDtype
from cnnkit.errors import ExportError, shorten
from cnnkit.export.graph_checks import rename_tensor
from cnnkit.graph.index import GraphIndex

if TYPE_CHECKING:
    from cnnkit.export.onnx import ExportConfig

ROUTE = "tf2onnx.convert.from_function(tf.function(model(x, training=False)), named tf.TensorSpec)"
KERAS_ROUTE = 'keras.Model.export(format="onnx")'


def route_label(route: str) -> str:
    return "tf2onnx" if route == ROUTE else "keras model.export"


def _input_spec(keras_model: Any, config: ExportConfig) -> Any:
    import tensorflow as tf

    in_shape = (None, *(int(d) for d in keras_model.inputs[0].shape[1:]))
    tf_dtype = tf.uint8 if config.input_dtype is InputDtype.UINT8 else tf.float32
    return tf.TensorSpec(in_shape, tf_dtype, name=config.input_name)


def convert_with_tf2onnx(keras_model: Any, config: ExportConfig, versions: dict[str, Any]) -> Any:
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


def convert_with_keras_export(keras_model: Any, config: ExportConfig, versions: dict[str, Any]) -> Any:
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
        rename_tensor(model_proto, graph.output[0].name, config.output_name)
    return model_proto


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


def _conversion_failure(exc: Exception, log: str) -> str:
    """Name the op or layer that failed, from tf2onnx's exception and log."""
    unsupported = re.search(r"Unsupported ops: Counter\(\{([^}]*)\}\)", log + str(exc))
    if unsupported:
        return f"unsupported TensorFlow op(s) {unsupported.group(1)}"
    node = re.search(r"(?:node|Node) ([\w/.-]+)", str(exc))
    where = f" at {node.group(1)}" if node else ""
    return f"{type(exc).__name__}{where}: {shorten(exc, 200)}"


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
