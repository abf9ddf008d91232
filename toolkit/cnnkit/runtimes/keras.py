"""A Keras model behind the runner contract, in inference mode (``model(x, training=False)``, never ``predict``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.runtimes.base import RunnerInfo, TimedCall

# Keras dtype policies -> the precision names results use.
_PRECISIONS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "mixed_float16": "mixed",
               "mixed_bfloat16": "mixed", "float64": "fp64"}


class KerasRunner:
    """A Keras model. ``input_name``/``output_names``: the names it answers to (an ONNX export's, so that its
    outputs line up with the .onnx's); it takes float32 NHWC batches, as the model itself does."""

    def __init__(self, model: Any, input_name: str = "images", output_names: tuple[str, ...] = ("probabilities",),
                 label: str = "keras", model_path: str | os.PathLike[str] | None = None, build_ms: float = 0.0):
        from cnnkit._deps import require_keras, require_tensorflow

        keras, tf = require_keras(), require_tensorflow()
        self.model = model
        self.label = label
        self.input_name = input_name
        self.output_names = tuple(output_names)
        self.input_shape: tuple[Any, ...] = tuple("batch" if d is None else int(d) for d in model.inputs[0].shape)
        self.input_dtype = np.dtype(np.float32)
        self.build_ms = build_ms
        self._layer_model: Any = None
        gpus = tf.config.list_logical_devices("GPU")
        policy = model.dtype_policy.name
        threads = tf.config.threading.get_intra_op_parallelism_threads()
        path = Path(model_path) if model_path is not None else None
        self.info = RunnerInfo(
            runtime="keras", requested=f"keras {'GPU' if gpus else 'CPU'}", providers=tuple(d.name for d in gpus) or ("CPU",),
            active=f"TensorFlow {'GPU' if gpus else 'CPU'}", device="gpu:0" if gpus else "cpu",
            precision=_PRECISIONS.get(policy, policy), threads=threads or None, version=keras.__version__,
            options={"dtype_policy": policy, "tensorflow": tf.__version__},
            model_path=str(path) if path is not None else None, model_bytes=path.stat().st_size if path else None)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kw: Any) -> KerasRunner:
        from cnnkit.keras.build import load_keras_model

        t0 = time.perf_counter_ns()
        model = load_keras_model(path)
        build_ms = (time.perf_counter_ns() - t0) / 1e6
        return cls(model, label=kw.pop("label", Path(path).name), model_path=path, build_ms=build_ms, **kw)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(feeds[self.input_name], dtype=np.float32)
        y = self.model(x, training=False)
        outs = y if isinstance(y, list | tuple) else [y]
        return {name: np.asarray(out) for name, out in zip(self.output_names, outs, strict=True)}

    def timed_call(self, x: np.ndarray, include_copies: bool = False) -> TimedCall:
        """One call of the model on ``x``, its outputs copied to the host (that is what ends the call on a GPU)."""
        feeds = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        last: dict[str, dict[str, np.ndarray]] = {}

        def run() -> None:
            last["out"] = self.infer(feeds)

        return TimedCall(run, lambda: last["out"] if last else self.infer(feeds))

    def layers(self) -> list[Any]:
        return [layer for layer in self.model.layers if type(layer).__name__ != "InputLayer"]

    def infer_layers(self, x: np.ndarray, layers: list[Any] | None = None) -> dict[str, np.ndarray]:
        """The outputs of ``layers`` (default: every layer) for ``x``, by layer name."""
        layers = self.layers() if layers is None else layers
        names = tuple(layer.name for layer in layers)
        if self._layer_model is None or self._layer_model[0] != names:
            from cnnkit._deps import require_keras

            keras = require_keras()
            self._layer_model = (names, keras.Model(self.model.inputs, [layer.output for layer in layers]))
        outs = self._layer_model[1]([np.asarray(x, dtype=np.float32)], training=False)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        return {name: np.asarray(out) for name, out in zip(names, outs, strict=True)}
