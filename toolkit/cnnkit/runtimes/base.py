"""The one runtime contract: every runner (ONNX Runtime, OpenVINO, LiteRT, Keras) is built from a choice by
:func:`cnnkit.runtimes.registry.create_runner`, takes a batch (``infer(feeds) -> dict``), offers the call a
benchmark times (``timed_call``) and says what really ran as one :class:`RunnerInfo`.

Runners speak the ONNX graph's input and output names and its layout, so the dictionaries of two runners on
the same model line up (parity is "run two runners on the same feeds and compare"). Nothing here imports a
runtime; what each one needs installed is said here too (:func:`require_runtime`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Protocol

import numpy as np

from cnnkit.errors import MissingDependencyError


@dataclass(frozen=True)
class RunnerInfo:
    """What really ran a model: read back from the runtime after it was built, never the request echoed.

    ``providers``: what executes it in priority order (ONNX Runtime: ``session.get_providers()``); ``active``:
    the one doing the work, as results name it (``CUDAExecutionProvider``, ``OpenVINO CPU``, ``LiteRT XNNPACK``);
    ``device``: ``cpu``, ``cuda:0``, ... ; ``precision``: what it computes in (ONNX Runtime: the model's own,
    e.g. fp32, int8-static); ``threads``: the intra-op threads it uses (None: the runtime's own default);
    ``fallback``: the requested provider did not load and fallback was allowed (``fallback_reason``: why);
    ``options``: the runtime's own settings as built; ``model_path``/``model_bytes``: the file it ran (a LiteRT
    .tflite is not the .onnx; None for a model held in memory).
    """

    runtime: str
    requested: str
    providers: tuple[str, ...]
    active: str
    device: str
    precision: str
    threads: int | None
    version: str | None
    fallback: bool = False
    fallback_reason: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    model_path: str | None = None
    model_bytes: int | None = None

    def __post_init__(self) -> None:
        # Stored as JSON will hold them (tuples as lists), so that a record read back equals the one written.
        object.__setattr__(self, "options", json.loads(json.dumps(self.options, default=str)))
        object.__setattr__(self, "providers", tuple(self.providers))

    @property
    def on_gpu(self) -> bool:
        """Whether it runs on a GPU (the one place cnnkit decides it: device-resident IO, GPU memory, CUDA options)."""
        return self.device.split(":")[0] in GPU_DEVICES

    def provider_record(self) -> dict[str, Any]:
        """The ``provider`` object results store (``cnnkit.bench/1`` cases, eval models, parity): requested,
        providers, fallback, fallback_reason, options, active."""
        return {"requested": self.requested, "providers": list(self.providers), "fallback": self.fallback,
                "fallback_reason": self.fallback_reason, "options": dict(self.options), "active": self.active}

    def headline(self) -> str:
        if self.fallback:
            return f"ran on {self.active} (FALLBACK: {self.requested} did not load: {self.fallback_reason})"
        return f"ran on {self.active}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"providers": list(self.providers)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunnerInfo:
        """The inverse of :meth:`to_dict` (e.g. from a Ray worker); keys it does not know are ignored."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


GPU_DEVICES = ("cuda", "gpu")  # device names (before ":index") that are GPUs


@dataclass(frozen=True)
class TimedCall:
    """The call a benchmark times, prepared for one input batch.

    ``run()``: one inference, as lean as the runtime allows (nothing else in it); ``outputs()``: the outputs
    of the last ``run``, on the host, by name (for checks, outside the timing); ``io_binding``: inputs and
    outputs stay on the device, so host<->device copies are not timed.
    """

    run: Callable[[], Any]
    outputs: Callable[[], dict[str, np.ndarray]]
    io_binding: bool = False


class Runner(Protocol):
    """What every runner offers (see the module docstring)."""

    label: str
    input_name: str
    output_names: tuple[str, ...]
    input_shape: tuple[Any, ...]  # the input the runner takes, as its runtime declares it (symbolic dims as str)
    input_dtype: np.dtype
    info: RunnerInfo
    build_ms: float  # how long the runtime took to build it (session, compiled model, interpreter)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def timed_call(self, x: np.ndarray, include_copies: bool = False) -> TimedCall:
        """``x``: a batch as :meth:`infer` takes it. ``include_copies``: time host<->device copies too
        (only a device-resident runner leaves them out)."""
        ...


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


def run_batched(runner: Runner, x: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """``runner.infer`` over ``x`` in chunks of ``batch_size`` (the last one may be smaller), concatenated."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), batch_size):
        out = runner.infer({runner.input_name: x[start : start + batch_size]})
        for name, value in out.items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


class ImageRunner:
    """Any runner that speaks an ONNX model's input, fed cnnkit's images: ``(N, H, W, C)`` pixel values 0..255,
    converted to the model's layout and dtype by :meth:`cnnkit.graph.info.ImageInput.to_model`."""

    def __init__(self, runner: Runner, image: Any):
        self.runner = runner
        self.image = image
        self.label: str = runner.label
        self.input_name: str = runner.input_name
        self.output_names: tuple[str, ...] = runner.output_names
        self.input_shape: tuple[Any, ...] = (runner.input_shape[0], *image.hwc)
        self.input_dtype = np.dtype(np.uint8)
        self.info: RunnerInfo = runner.info
        self.build_ms: float = runner.build_ms

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.infer({self.input_name: self.image.to_model(feeds[self.input_name])})

    def timed_call(self, x: np.ndarray, include_copies: bool = False) -> TimedCall:
        return self.runner.timed_call(self.image.to_model(x), include_copies)  # converted once, outside the timing


# --- what each runtime needs installed ------------------------------------------------------------------

RUNTIMES = ("onnxruntime", "openvino", "litert")  # those --runtime chooses from
# The distribution each runtime comes from and the extra that installs it.
DISTRIBUTIONS = {"onnxruntime": ("onnxruntime-gpu", "onnxruntime"), "openvino": ("openvino",), "litert": ("ai-edge-litert",)}
INSTALL = {
    "onnxruntime": "pip install onnxruntime-gpu (Linux x86_64) or pip install onnxruntime",
    "openvino": "pip install 'cnnkit[openvino]'",
    "litert": "pip install 'cnnkit[litert]'",
}


def require_runtime(name: str) -> Any:
    """Import the runtime's Python module, or fail in one line saying what to install."""
    import importlib

    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "litert": "ai_edge_litert.interpreter"}[name]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"runtime {name} is not installed ({exc})", hint=INSTALL[name]) from None


def runtime_versions() -> dict[str, str | None]:
    """Installed version of each runtime's distribution (None: not installed), from metadata, not imports."""
    out: dict[str, str | None] = {}
    for runtime, dists in DISTRIBUTIONS.items():
        out[runtime] = None
        for dist in dists:
            try:
                out[runtime] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out
