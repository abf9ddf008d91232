"""OpenVINO on the CPU, reading the same .onnx as ONNX Runtime: ``Core().compile_model(model, "CPU", config)``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError, ModelFileError, shorten
from cnnkit.runtimes.base import RunnerInfo, TimedCall, in_fixed_batches, require_runtime

_HINTS = {"fp32": "f32", "bf16": "bf16"}
_NUMPY = {"f32": np.float32, "f16": np.float16, "u8": np.uint8, "i8": np.int8}


class OpenVinoRunner:
    """An OpenVINO compiled model. Defaults: CPU, latency hint, OpenVINO's own thread count, fp32.

    ``precision`` sets ``INFERENCE_PRECISION_HINT`` (fp32 -> f32, bf16 -> bf16); the precision the compiled
    model reports is what the result states (bf16 asked for on a CPU without bf16 runs, and is stated as, fp32).
    ``batch_size``: reshape to that static batch first (as deployments do; dynamic shapes cost OpenVINO more).
    ``throughput``: compile for many requests at once (``PERFORMANCE_HINT: THROUGHPUT``: OpenVINO picks its
    streams) and hold as many infer requests as it asks for (``OPTIMAL_NUMBER_OF_INFER_REQUESTS``), each served by
    :meth:`request_engines`; default: the latency hint and one request.
    """

    def __init__(self, model: str | os.PathLike[str], precision: str = "fp32", threads: int = 0,
                 batch_size: int | None = None, label: str | None = None, throughput: bool = False) -> None:
        from cnnkit.graph.info import describe_onnx

        ov = require_runtime("openvino")
        if precision not in _HINTS:
            raise CnnkitError(f"OpenVINO precision must be fp32 or bf16, got {precision!r}")
        info = describe_onnx(model, require_image=False)
        self.label = label or Path(model).name
        self.input_name = info.input_name
        self.output_names = info.output_names
        core = ov.Core()
        t0 = time.perf_counter_ns()
        try:
            ov_model = core.read_model(str(model))
            if batch_size is not None:
                shape = list(ov_model.inputs[0].get_partial_shape())
                ov_model.reshape({ov_model.inputs[0].get_any_name(): [batch_size, *(int(str(d)) for d in shape[1:])]})
            self.options: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _HINTS[precision],
                                            "PERFORMANCE_HINT": "THROUGHPUT" if throughput else "LATENCY"}
            if threads:
                self.options["INFERENCE_NUM_THREADS"] = int(threads)
            self.compiled = core.compile_model(ov_model, "CPU", self.options)
        except Exception as exc:  # noqa: BLE001 (OpenVINO raises RuntimeError for any failure)
            detail = shorten(exc, 300)
            raise ModelFileError(f"OpenVINO cannot compile {model}: {detail}",
                                 hint="run it in ONNX Runtime (--runtime onnxruntime) to see whether the model is at fault") from None
        self.request = self.compiled.create_infer_request()
        wanted = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if throughput else 1
        # The first request is also infer()'s and timed_call()'s; each further one serves one more worker.
        self.requests = [self.request, *(self.compiled.create_infer_request() for _ in range(max(wanted, 1) - 1))]
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        self.build_ms = (time.perf_counter_ns() - t0) / 1e6
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16"
        port = self.compiled.inputs[0]
        self.input_shape = tuple(str(d) if not d.is_static else d.get_length() for d in port.get_partial_shape())
        self.input_dtype = np.dtype(_NUMPY.get(port.get_element_type().get_type_name(), np.float32))
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        precision_text = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(actual, actual)
        self.info = RunnerInfo(
            runtime="openvino", requested=f"openvino CPU {precision}", providers=("CPU",), active="OpenVINO CPU",
            device="cpu", precision=precision_text, threads=self.threads, version=ov.get_version(),
            options={k: str(v) for k, v in self.options.items()} | {"threads_used": self.threads,
                                                                    "static_batch": batch_size,
                                                                    "streams": self.streams,
                                                                    "infer_requests": len(self.requests),
                                                                    "openvino": ov.get_version()},
            model_path=str(model), model_bytes=Path(model).stat().st_size)

    def timed_call(self, x: np.ndarray, include_copies: bool = False) -> TimedCall:
        """One synchronous inference on ``x`` (the outputs stay in OpenVINO's buffers; on the CPU there is no
        copy to leave out)."""
        request, feeds = self.request, {0: np.ascontiguousarray(x, dtype=self.input_dtype)}
        return TimedCall(lambda: request.infer(feeds), self._outputs)

    def _outputs(self) -> dict[str, np.ndarray]:
        # The request reuses its output buffers: copy before the next call overwrites them.
        return {name: np.array(self.request.get_tensor(port).data)
                for name, port in zip(self.output_names, self.compiled.outputs, strict=True)}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._infer_on(self.request, feeds)

    def request_engines(self, n: int | None = None) -> list[Any]:
        """One ``infer``-like callable per infer request (``n`` of them, more requests made where needed; default:
        those OpenVINO asked for): each may run in its own thread at the same time as the others (a request is
        used by one thread; OpenVINO spreads them over its streams)."""
        while n is not None and len(self.requests) < n:
            self.requests.append(self.compiled.create_infer_request())
        return [lambda feeds, request=request: self._infer_on(request, feeds) for request in self.requests[:n]]

    def _infer_on(self, request: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            out = request.infer({0: np.ascontiguousarray(x)})
            # The request reuses its output buffers: copy before the next call overwrites them.
            return {name: np.array(out[port]) for name, port in zip(self.output_names, self.compiled.outputs, strict=True)}

        x = np.asarray(feeds[self.input_name], dtype=self.input_dtype)
        fixed = self.input_shape[0] if isinstance(self.input_shape[0], int) else None
        return in_fixed_batches(run, x, fixed)  # a static batch (the model's, or compiled for) takes no other


def bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 here (AVX-512 BF16 or AMX); otherwise the hint is ignored."""
    ov = require_runtime("openvino")
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
