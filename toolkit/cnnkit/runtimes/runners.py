"""Runners: one narrow contract, ``infer(feeds: dict) -> dict``, for Keras and ONNX Runtime alike.

Parity is then "run two runners on the same feeds and compare". Both runners name their input and
outputs with the ONNX graph's names, so their dictionaries line up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cnnkit.runtimes.sessions import SessionConfig, SessionInfo, create_session


class Runner(Protocol):
    label: str
    input_name: str
    output_names: tuple[str, ...]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxRuntimeRunner:
    """An ONNX Runtime session on a checked provider (see :func:`cnnkit.runtimes.sessions.create_session`).

    ``infer`` takes the model's own input (its layout and dtype; :class:`ImageRunner` adapts cnnkit's images).
    A model with a fixed batch is run in chunks of that batch (the last one padded, the padding's outputs
    dropped), so any number of inputs works. ``image``: the model's image input, None for a non-image model.
    """

    def __init__(self, model: str | os.PathLike[str] | bytes, config: SessionConfig | None = None, label: str | None = None):
        from cnnkit.errors import ModelFileError
        from cnnkit.graph.info import ImageInput, image_input, load_onnx

        self.label = label or (Path(model).name if not isinstance(model, bytes) else "onnx")
        self.session, self.info = create_session(model, config)  # first: its errors name what ONNX Runtime refuses
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{self.label}: cnnkit runs models with one input; this one has {len(inputs)}: "
                                 f"{', '.join(f'{i.name} {i.shape}' for i in inputs)}")
        self.input_name: str = inputs[0].name
        self.input_shape: tuple[Any, ...] = tuple(inputs[0].shape)
        self.input_type: str = inputs[0].type  # e.g. "tensor(float)", "tensor(uint8)"
        self.output_names: tuple[str, ...] = tuple(o.name for o in self.session.get_outputs())
        self.image: ImageInput | None = None
        if len(self.input_shape) == 4:
            proto = _load_proto(model) if isinstance(model, bytes) else load_onnx(model)
            self.image = image_input(proto, self.label) if proto is not None else None

    @property
    def input_dtype(self) -> np.dtype:
        """The dtype the model's input takes."""
        return np.dtype({"tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(float16)": np.float16,
                         "tensor(double)": np.float64}.get(self.input_type, np.float32))

    @property
    def session_info(self) -> SessionInfo:
        return self.info

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds[self.input_name]
        if x.dtype != self.input_dtype:
            x = x.astype(self.input_dtype)
        fixed = self.image.batch if self.image is not None else None
        return in_fixed_batches(
            lambda chunk: dict(zip(self.output_names, self.session.run(None, {self.input_name: chunk}), strict=True)),
            x, fixed)


def in_fixed_batches(run: Callable[[np.ndarray], dict[str, np.ndarray]], x: np.ndarray,
                     fixed: int | None) -> dict[str, np.ndarray]:
    """``run(x)``, or for a model with a ``fixed`` batch ``run`` on chunks of that size: the last chunk padded
    with copies of its last input, the padding's outputs dropped, the chunks' outputs concatenated."""
    if fixed is None or len(x) == fixed:
        return run(x)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), fixed):
        chunk = x[start : start + fixed]
        n = len(chunk)
        if n < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - n, axis=0)])
        for name, value in run(chunk).items():
            parts.setdefault(name, []).append(value[:n] if np.ndim(value) and len(value) == fixed else value)
    return {name: np.concatenate(values) if all(np.ndim(v) for v in values) else values[-1]
            for name, values in parts.items()}


class ImageRunner:
    """Any runner that speaks an ONNX model's input, fed cnnkit's images: ``(N, H, W, C)`` pixel values 0..255,
    converted to the model's layout and dtype by :meth:`cnnkit.graph.info.ImageInput.to_model`."""

    def __init__(self, runner: Any, image: Any):
        self.runner = runner
        self.image = image
        self.label: str = runner.label
        self.input_name: str = runner.input_name
        self.output_names: tuple[str, ...] = runner.output_names

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.infer({self.input_name: self.image.to_model(feeds[self.input_name])})


def _load_proto(model: bytes) -> Any:
    import onnx

    try:
        return onnx.load_from_string(model)
    except Exception:  # noqa: BLE001 (create_session reports an unreadable model)
        return None


class KerasRunner:
    """A Keras model in inference mode (``model(x, training=False)``, never ``predict``)."""

    def __init__(self, model: Any, input_name: str = "images", output_names: tuple[str, ...] = ("probabilities",),
                 label: str = "keras"):
        self.model = model
        self.label = label
        self.input_name = input_name
        self.output_names = output_names
        self._layer_model: Any = None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kw: Any) -> KerasRunner:
        from cnnkit.keras.build import load_keras_model

        return cls(load_keras_model(path), label=kw.pop("label", Path(path).name), **kw)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(feeds[self.input_name], dtype=np.float32)
        y = self.model(x, training=False)
        outs = y if isinstance(y, list | tuple) else [y]
        return {name: np.asarray(out) for name, out in zip(self.output_names, outs, strict=True)}

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


def run_batched(runner: Runner, x: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """``runner.infer`` over ``x`` in chunks of ``batch_size`` (the last one may be smaller), concatenated."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), batch_size):
        out = runner.infer({runner.input_name: x[start : start + batch_size]})
        for name, value in out.items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}
