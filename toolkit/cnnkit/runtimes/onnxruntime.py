"""ONNX Runtime behind the runner contract: a session from :func:`cnnkit.runtimes.sessions.create_session` (the
one place sessions are built), and the call a benchmark times, device-resident (IO binding) on a GPU."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.runtimes.base import RunnerInfo, TimedCall, in_fixed_batches
from cnnkit.runtimes.sessions import SessionConfig, SessionInfo, create_session

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}
_CUDA = ("CUDAExecutionProvider", "TensorrtExecutionProvider")  # bound on "cuda" devices
_CPU = ("CPUExecutionProvider", "XnnpackExecutionProvider")


def provider_device(active: str, device_id: int = 0) -> str:
    """The device an ONNX Runtime provider computes on: ``cuda:N`` for CUDA and TensorRT, ``cpu`` for the CPU
    providers, else the provider's short name (``dml``, ``coreml``, ...)."""
    if active in _CUDA:
        return f"cuda:{device_id}"
    if active in _CPU:
        return "cpu"
    return active.removesuffix("ExecutionProvider").lower()


def session_runner_info(sinfo: SessionInfo, config: SessionConfig, precision: str,
                        model: str | os.PathLike[str] | bytes | None = None) -> RunnerInfo:
    """The :class:`RunnerInfo` of a session that ``create_session`` built (``precision``: the model's)."""
    import onnxruntime as ort

    path = None if model is None or isinstance(model, bytes) else Path(model)
    return RunnerInfo(
        runtime="onnxruntime", requested=sinfo.requested, providers=tuple(sinfo.providers), active=sinfo.active,
        device=provider_device(sinfo.active, config.device_id), precision=precision,
        threads=config.intra_op_threads or None, version=ort.__version__, fallback=sinfo.fallback,
        fallback_reason=sinfo.fallback_reason, options=dict(sinfo.options),
        model_path=str(path) if path is not None else None,
        model_bytes=path.stat().st_size if path is not None else (len(model) if isinstance(model, bytes) else None))


class OnnxRuntimeRunner:
    """An ONNX Runtime session on a checked provider (see :func:`cnnkit.runtimes.sessions.create_session`).

    ``infer`` takes the model's own input (its layout and dtype; :class:`cnnkit.runtimes.base.ImageRunner`
    adapts cnnkit's images). A model with a fixed batch is run in chunks of that batch (the last one padded,
    the padding's outputs dropped), so any number of inputs works. ``image``: the model's image input, None
    for a non-image model. Defaults: :class:`SessionConfig`'s (CPU).
    """

    def __init__(self, model: str | os.PathLike[str] | bytes, config: SessionConfig | None = None, label: str | None = None):
        from cnnkit.errors import ModelFileError

        self.label = label or (Path(model).name if not isinstance(model, bytes) else "onnx")
        self.config = config or SessionConfig()
        t0 = time.perf_counter_ns()
        self.session, self.session_info = create_session(model, self.config)  # first: it names what ORT refuses
        self.build_ms = (time.perf_counter_ns() - t0) / 1e6
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{self.label}: cnnkit runs models with one input; this one has {len(inputs)}: "
                                 f"{', '.join(f'{i.name} {i.shape}' for i in inputs)}")
        self.input_name: str = inputs[0].name
        self.input_shape: tuple[Any, ...] = tuple(inputs[0].shape)
        self.input_type: str = inputs[0].type  # e.g. "tensor(float)", "tensor(uint8)"
        self.input_dtype = np.dtype(_DTYPES.get(self.input_type, np.float32))
        self.output_names: tuple[str, ...] = tuple(o.name for o in self.session.get_outputs())
        precision, self.image = _described(model, self.label, len(self.input_shape) == 4)
        self.info = session_runner_info(self.session_info, self.config, precision, model)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds[self.input_name]
        if x.dtype != self.input_dtype:
            x = x.astype(self.input_dtype)
        fixed = self.image.batch if self.image is not None else None
        return in_fixed_batches(
            lambda chunk: dict(zip(self.output_names, self.session.run(None, {self.input_name: chunk}), strict=True)),
            x, fixed)

    def timed_call(self, x: np.ndarray, include_copies: bool = False) -> TimedCall:
        """One ``session.run`` on ``x``; on a GPU without ``include_copies``, IO binding with the input and the
        outputs resident on the device (preallocated where their shape is known), so no copy is timed."""
        session = self.session
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        if not self.info.on_gpu or include_copies:
            feeds = {self.input_name: x}
            return TimedCall(lambda: session.run(None, feeds),
                             lambda: dict(zip(self.output_names, session.run(None, feeds), strict=True)))
        import onnxruntime as ort

        device_id = self.config.device_id
        binding = session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", device_id))
        shapes = output_shapes(session.get_outputs(), x.shape[0])
        for out in session.get_outputs():
            if out.name in shapes:
                # Preallocated: a CUDA graph replays fixed addresses, so outputs must not move between runs.
                y = ort.OrtValue.ortvalue_from_shape_and_type(shapes[out.name], _DTYPES.get(out.type, np.float32),
                                                              "cuda", device_id)
                binding.bind_ortvalue_output(out.name, y)
            else:
                binding.bind_output(out.name, "cuda", device_id)
        binding.synchronize_inputs()

        def run() -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return TimedCall(run, lambda: dict(zip(self.output_names, binding.copy_outputs_to_cpu(), strict=True)),
                         io_binding=True)


def output_shapes(outputs: Any, batch_size: int) -> dict[str, tuple[int, ...]]:
    """Output name -> shape at ``batch_size``, for outputs whose other dimensions are all fixed.

    ``outputs``: ``session.get_outputs()`` (objects with ``.name`` and ``.shape``; the first dim is the batch).
    """
    shapes = {}
    for out in outputs:
        rest = list(out.shape[1:])
        if out.shape and all(isinstance(d, int) and d > 0 for d in rest):
            shapes[out.name] = (batch_size, *rest)
    return shapes


def _described(model: str | os.PathLike[str] | bytes, label: str, image: bool) -> tuple[str, Any]:
    """The model's precision and (``image``: a 4-D input) its :class:`~cnnkit.graph.info.ImageInput`."""
    if isinstance(model, bytes):
        return _describe_proto(_load_proto(model), label, image)
    path = Path(model).resolve()
    stat = path.stat()
    return _described_file(str(path), stat.st_mtime_ns, stat.st_size, label, image)


@functools.lru_cache(maxsize=16)
def _described_file(path: str, _mtime_ns: int, _size: int, label: str, image: bool) -> tuple[str, Any]:
    """Once per file (and version of it): benchmarking and tuning build many runners of one model."""
    from cnnkit.graph.info import load_onnx

    return _describe_proto(load_onnx(path), label, image)


def _describe_proto(proto: Any, label: str, image: bool) -> tuple[str, Any]:
    from cnnkit.graph.info import image_input, model_precision

    return model_precision(proto), (image_input(proto, label) if image else None)


def _load_proto(model: bytes) -> Any:
    import onnx

    return onnx.load_from_string(model)  # after create_session accepted it


def recorded_info(provider: dict[str, Any], precision: str = "model") -> RunnerInfo:
    """The :class:`RunnerInfo` of an ONNX Runtime run as a result recorded it (its ``provider`` object)."""
    options = dict(provider.get("options") or {})
    return RunnerInfo(
        runtime="onnxruntime", requested=provider.get("requested", provider["active"]),
        providers=tuple(provider.get("providers") or (provider["active"],)), active=provider["active"], device=provider_device(provider["active"], int(options.get("device_id", 0))),
        precision=precision, threads=options.get("intra_op_threads") or None, version=None,
        fallback=bool(provider.get("fallback")), fallback_reason=provider.get("fallback_reason"), options=options)
