"""LiteRT (``ai_edge_litert``) with XNNPACK on the CPU, running the .tflite made from the same Keras model."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import ModelFileError, shorten
from cnnkit.runtimes.base import RunnerInfo, TimedCall, require_runtime, runtime_versions


class LiteRtRunner:
    """A LiteRT interpreter (XNNPACK delegate, ``threads`` threads; 0: one per usable core), fp32.

    It speaks the ONNX model's names and layout (``onnx_model``), so its dictionaries line up with ONNX
    Runtime's: a .tflite from Keras is NHWC; fed an NCHW batch it transposes it first (for the timed call once,
    outside the timing). The batch dimension is resized on demand.
    """

    def __init__(self, tflite: str | os.PathLike[str], onnx_model: str | os.PathLike[str] | None = None,
                 threads: int = 0, label: str | None = None) -> None:
        from cnnkit._deps import capture_native_stderr
        from cnnkit.envinfo import cpu_info
        from cnnkit.io import sha256_file

        litert = require_runtime("litert")
        path = Path(tflite)
        self.label = label or path.name
        self.threads = int(threads) or (cpu_info()["usable_cores"] or 1)
        t0 = time.perf_counter_ns()
        try:
            with capture_native_stderr(replay_on_error=False) as log:
                self.interpreter = litert.Interpreter(model_path=str(path), num_threads=self.threads)
                self.interpreter.allocate_tensors()
        except Exception as exc:  # noqa: BLE001 (LiteRT raises ValueError/RuntimeError)
            raise ModelFileError(f"LiteRT cannot load {path}: {shorten(exc, 300)}",
                                 hint="is it a complete .tflite file? make one with cnnkit export --format tflite") from None
        self.build_ms = (time.perf_counter_ns() - t0) / 1e6
        details = self.interpreter.get_input_details()
        if len(details) != 1:
            raise ModelFileError(f"{path}: cnnkit runs models with one input; this one has {len(details)}")
        self._input = details[0]
        self._outputs = self.interpreter.get_output_details()
        self.input_dtype = np.dtype(self._input["dtype"])
        self.input_shape: tuple[Any, ...] = tuple("batch" if d < 0 else int(d) for d in self._input["shape_signature"])
        self._native = tuple(int(d) for d in self._input["shape"][1:])
        self._transpose = False
        if onnx_model is not None:
            from cnnkit.graph.info import describe_onnx

            info = describe_onnx(onnx_model, require_image=False)
            self.input_name, self.output_names = info.input_name, info.output_names
            onnx_image = tuple(int(d) for d in info.input_shape[1:]) if len(info.input_shape) == 4 else None
            if onnx_image is not None and onnx_image != self._native:
                if len(onnx_image) == 3 and (onnx_image[1], onnx_image[2], onnx_image[0]) == self._native:
                    self._transpose = True  # the .onnx is NCHW
                else:
                    raise ModelFileError(f"{path} takes images of shape {self._native}, {onnx_model} {onnx_image}",
                                         hint="export both from the same Keras model")
            if len(self._outputs) != len(self.output_names):
                raise ModelFileError(f"{path} has {len(self._outputs)} outputs, {onnx_model} {len(self.output_names)}")
        else:
            self.input_name = self._input["name"]
            self.output_names = tuple(o["name"] for o in self._outputs)
        if self._transpose:  # what infer takes: the .onnx's layout
            self.input_shape = (self.input_shape[0], self.input_shape[3], self.input_shape[1], self.input_shape[2])
        # LiteRT logs the delegate's creation only once per process; its node in the plan says so every time.
        xnnpack = "XNNPACK" in log.text or any(op["op_name"] == "DELEGATE" for op in self.interpreter._get_ops_details())
        self.info = RunnerInfo(
            runtime="litert", requested="litert XNNPACK", providers=("XNNPACK",) if xnnpack else ("builtin",),
            active="LiteRT XNNPACK" if xnnpack else "LiteRT builtin", device="cpu", precision="fp32",
            threads=self.threads, version=runtime_versions()["litert"],
            options={"num_threads": self.threads, "tflite": str(path), "tflite_sha256": sha256_file(path),
                     "ai_edge_litert": runtime_versions()["litert"]},
            model_path=str(path), model_bytes=path.stat().st_size)  # the file it runs, not the .onnx
        self._batch = int(self._input["shape"][0])

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], [batch, *self._native])
            self.interpreter.allocate_tensors()
            self._batch = batch

    def timed_call(self, x: np.ndarray, include_copies: bool = False) -> TimedCall:
        """Copy ``x`` in, invoke, copy the first output out (the interpreter's buffers are the host's)."""
        x = self._native_layout(np.asarray(x))
        self._resize(len(x))
        interp, index, out = self.interpreter, self._input["index"], self._outputs[0]["index"]
        x = np.ascontiguousarray(x, dtype=self.input_dtype)

        def run() -> Any:
            interp.set_tensor(index, x)
            interp.invoke()
            return interp.get_tensor(out)

        return TimedCall(run, self._copy_outputs)

    def _native_layout(self, x: np.ndarray) -> np.ndarray:
        return x.transpose(0, 2, 3, 1) if self._transpose else x

    def _copy_outputs(self) -> dict[str, np.ndarray]:
        return {name: self.interpreter.get_tensor(o["index"]).copy()
                for name, o in zip(self.output_names, self._outputs, strict=True)}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self._native_layout(np.asarray(feeds[self.input_name]))
        self._resize(len(x))
        self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(x, dtype=self.input_dtype))
        self.interpreter.invoke()
        return self._copy_outputs()
