"""``cnnkit export --format tflite``: a Keras model as a .tflite for LiteRT, checked against Keras.

Route: ``tf.lite.TFLiteConverter.from_concrete_functions`` on a ``tf.function`` of ``model(x, training=False)``
with a dynamic batch, weights frozen into constants first (as resource variables LiteRT reads them on every
call and XNNPACK cannot pre-pack them: ~40x slower here). The input is the Keras model's: NHWC, raw pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import ExportError, shorten
from cnnkit.io import check_writable, write_bytes_atomic

ROUTE = "tf.lite.TFLiteConverter.from_concrete_functions(frozen tf.function(model(x, training=False)))"


@dataclass(frozen=True)
class TfliteExportConfig:
    """Defaults: fp32, dynamic batch, check 16 inputs against Keras within ``atol`` 1e-4."""

    model_path: Path
    output_path: Path
    force: bool = False
    check_samples: int = 16
    atol: float = 1e-4


@dataclass(frozen=True)
class TfliteExportResult:
    output_path: str
    size_bytes: int
    input_shape: tuple[Any, ...]
    output_shape: tuple[Any, ...]
    max_abs_diff: float  # against Keras on the check inputs
    outputs_vary: bool  # False: every check input gave Keras the same output, so the check proves little
    route: str
    versions: dict[str, str | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_tflite(config: TfliteExportConfig) -> TfliteExportResult:
    """Convert ``config.model_path`` to a .tflite at ``config.output_path`` (atomically) and check it runs alike."""
    from cnnkit._deps import capture_native_stderr, require_tensorflow
    from cnnkit.keras.build import load_keras_model
    from cnnkit.envinfo import package_versions
    from cnnkit.runtimes.base import require_runtime, runtime_versions

    out = Path(config.output_path)
    check_writable(out, config.force)
    model_path = Path(config.model_path)
    keras_model = load_keras_model(model_path)
    if len(keras_model.inputs) != 1 or len(keras_model.outputs) != 1:
        raise ExportError(f"{model_path}: cnnkit exports models with one input and one output")
    image = tuple(keras_model.inputs[0].shape[1:])
    if any(d is None for d in image):
        raise ExportError(f"{model_path}: input shape {image} is not a fixed-size image",
                          hint="give the model a fixed input shape, e.g. keras.Input(shape=(28, 28, 1))")
    litert = require_runtime("litert")  # fail before the slow conversion if the result could not be checked
    tf = require_tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((None, *(int(d) for d in image)), tf.float32, name="images")
    try:
        with capture_native_stderr(replay_on_error=False) as log:
            fn = tf.function(lambda x: keras_model(x, training=False), input_signature=[spec])
            frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
            data = tf.lite.TFLiteConverter.from_concrete_functions([frozen], keras_model).convert()
    except Exception as exc:  # noqa: BLE001 (the converter raises many kinds)
        detail = shorten(exc, 300)
        raise ExportError(f"{model_path}: the TFLite converter could not convert it: {detail}",
                          hint=f"converter log: {' '.join(log.text.split())[-200:]}" if log.text else None) from None

    # Check before writing: the converted model must compute what Keras computes.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (config.check_samples, *image)).astype(np.float32)
    with capture_native_stderr(replay_on_error=False):
        interp = litert.Interpreter(model_content=data)
        index = interp.get_input_details()[0]["index"]
        interp.resize_tensor_input(index, list(x.shape))
        interp.allocate_tensors()
        interp.set_tensor(index, x)
        interp.invoke()
        got = interp.get_tensor(interp.get_output_details()[0]["index"])
    want = np.asarray(keras_model(x, training=False))
    diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
    if not np.isfinite(diff) or diff > config.atol:
        raise ExportError(f"{model_path}: the .tflite differs from Keras by {diff:.3g} (max abs, allowed {config.atol:g})",
                          hint="the conversion changed the model; nothing was written")
    write_bytes_atomic(out, data, force=config.force)
    versions = package_versions()
    return TfliteExportResult(
        output_path=str(out), size_bytes=len(data), input_shape=("batch", *image),
        output_shape=("batch", *keras_model.outputs[0].shape[1:]), max_abs_diff=diff,
        outputs_vary=bool(np.ptp(want, axis=0).max() > 1e-6), route=ROUTE,
        versions={"tensorflow": versions.get("tensorflow"), "keras": versions.get("keras"),
                  "ai_edge_litert": runtime_versions()["litert"]},
    )
