"""The one place ONNX Runtime sessions are built: provider by name, options exposed, no silent fallback.

``onnxruntime.get_available_providers()`` lists the providers a wheel was *built* with: onnxruntime-gpu
lists CUDA and TensorRT on a machine with no GPU, and a session asked for CUDA then quietly runs on the CPU.
So after creating a session we read ``session.get_providers()``; if the requested provider is not active we
fail with the reason ONNX Runtime logged (e.g. ``libcublasLt.so.13: cannot open shared object file``),
unless fallback is allowed, in which case the result says so.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.choices import CudnnConvAlgoSearch, ExecutionMode, GraphOptimization
from cnnkit.errors import CnnkitError, ModelFileError, shorten
from cnnkit.filekind import ONNX, not_onnx_error, require_file, sniff

_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
}
_GPU_HINT = (
    "install the CUDA and cuDNN libraries ONNX Runtime needs (pip install 'onnxruntime-gpu[cuda,cudnn]') and "
    "call onnxruntime.preload_dlls() or put them on LD_LIBRARY_PATH; check the GPU with nvidia-smi; "
    "or pass --allow-fallback to run on the CPU and say so"
)


class ProviderError(CnnkitError):
    """A requested execution provider that is unknown, not installed, or does not load (``reason``: why)."""

    def __init__(self, message: str, hint: str | None = None, reason: str | None = None) -> None:
        super().__init__(message, hint)
        self.reason = reason or message


class SessionError(CnnkitError):
    """ONNX Runtime refused to build a session from a readable model with the options given."""


@dataclass(frozen=True)
class SessionConfig:
    """How to build a session. Defaults: CPU, ONNX Runtime's own thread counts, all graph optimisations."""

    provider: str = "cpu"
    intra_op_threads: int = 0  # 0: ONNX Runtime's default (one per physical core)
    inter_op_threads: int = 0
    graph_optimization: GraphOptimization = GraphOptimization.ALL
    execution_mode: ExecutionMode = ExecutionMode.SEQUENTIAL
    allow_spinning: bool | None = None  # None: ONNX Runtime's default (spin)
    device_id: int = 0  # CUDA / TensorRT
    cudnn_conv_algo_search: CudnnConvAlgoSearch = CudnnConvAlgoSearch.EXHAUSTIVE
    cuda_graph: bool = False  # CUDA only; needs every node on the CUDA provider and IO binding
    allow_fallback: bool = False
    log_severity: int = 3  # ONNX Runtime's: 0 verbose .. 4 fatal
    cpu_mem_arena: bool = True  # ONNX Runtime's CPU memory arena; --no-arena turns it off
    provider_options: tuple[tuple[str, str], ...] = ()  # --provider-option KEY=VALUE: an accelerator's or plugin's own

    def __post_init__(self) -> None:
        for flag, value in (("--threads", self.intra_op_threads), ("--inter-op-threads", self.inter_op_threads)):
            if value < 0:
                raise CnnkitError(f"{flag} must be >= 0, got {value}", hint=f"0 lets ONNX Runtime choose; e.g. {flag} 4")

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionConfig:
        """The inverse of :meth:`to_dict`; keys it does not know are ignored (e.g. a stored result's extras)."""
        enums = {"graph_optimization": GraphOptimization, "execution_mode": ExecutionMode,
                 "cudnn_conv_algo_search": CudnnConvAlgoSearch}
        known = {f for f in cls.__dataclass_fields__}
        data = data | ({"provider_options": tuple(tuple(p) for p in data["provider_options"])}
                       if "provider_options" in data else {})
        return cls(**{k: (enums[k](v) if k in enums else v) for k, v in data.items() if k in known})


@dataclass(frozen=True)
class SessionInfo:
    """Which provider was asked for and which actually runs the model."""

    requested: str
    providers: tuple[str, ...]  # session.get_providers(), in priority order
    fallback: bool = False  # the requested provider did not load and fallback was allowed
    fallback_reason: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> str:
        return self.providers[0] if self.providers else "none"

    def headline(self) -> str:
        if self.fallback:
            return f"ran on {self.active} (FALLBACK: {self.requested} did not load: {self.fallback_reason})"
        return f"ran on {self.active}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"active": self.active}


def provider_label(info: dict[str, Any]) -> str:
    """``CPU``, ``CUDA (fallback)``: the provider that ran, from a ``SessionInfo.to_dict()``, for tables."""
    return info["active"].removesuffix("ExecutionProvider") + (" (fallback)" if info.get("fallback") else "")


def resolve_provider(name: str) -> str:
    """Map ``cpu``/``cuda``/``tensorrt``/... or a full EP name to the EP name; it must be in this build."""
    ort = _ort()
    available = ort.get_available_providers()
    wanted = _ALIASES.get(name.lower(), name)
    if wanted not in available:
        # Accept any listed EP by its short name, e.g. "vitisai" for VitisAIExecutionProvider.
        matches = [p for p in available if p.lower() == f"{name.lower()}executionprovider"]
        if not matches:
            plugin = _plugin_provider(name, wanted)
            if plugin is not None:
                return plugin
            short = ", ".join(_short(p) for p in available)
            raise ProviderError(
                f"unknown or uninstalled execution provider '{name}'",
                hint=f"this onnxruntime build has: {short}; plugin providers come from onnxruntime-ep-* packages "
                     "(cnnkit doctor lists those installed)",
            )
        wanted = matches[0]
    return wanted


def _plugin_provider(name: str, wanted: str) -> str | None:
    """The EP name an installed ``onnxruntime-ep-*`` plugin gives for ``name`` (registering it), or None."""
    from cnnkit.runtimes.plugins import installed_plugins, load_plugin

    keys = {wanted.lower(), name.lower(), f"{name.lower()}executionprovider"}
    for plugin in installed_plugins():
        status = load_plugin(*plugin)
        for ep in status.ep_names:
            if ep.lower() in keys:
                return ep
    return None


def _add_plugin_device(so: Any, provider: str, options: dict[str, str]) -> str | None:
    """Put the plugin provider's first device (CPU first) on ``so``; return why not when it exposes none."""
    from cnnkit.envinfo import cpu_info
    from cnnkit.runtimes.plugins import find_plugin, plugin_devices

    devices = plugin_devices(provider)
    if not devices:
        plugin = find_plugin(provider)
        source = f"the {plugin.distribution} {plugin.version} plugin" if plugin else "its plugin"
        return f"{source} registers {provider} but it exposes no device on this machine ({cpu_info()['model']})"
    so.add_provider_for_devices([devices[0]], options)
    return None


def _short(provider: str) -> str:
    for alias, full in _ALIASES.items():
        if full == provider and alias not in ("trt",):
            return alias
    return provider.removesuffix("ExecutionProvider").lower()


def _ort() -> Any:
    from cnnkit._deps import require_onnxruntime

    return require_onnxruntime()


def session_options(config: SessionConfig) -> Any:
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = config.intra_op_threads
    so.inter_op_num_threads = config.inter_op_threads
    so.graph_optimization_level = {
        GraphOptimization.DISABLE: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        GraphOptimization.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        GraphOptimization.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        GraphOptimization.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[config.graph_optimization]
    so.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if config.execution_mode is ExecutionMode.PARALLEL else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    if config.allow_spinning is not None:
        flag = "1" if config.allow_spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", flag)
        so.add_session_config_entry("session.inter_op.allow_spinning", flag)
    so.log_severity_level = config.log_severity
    so.enable_cpu_mem_arena = config.cpu_mem_arena
    return so


def _provider_chain(provider: str, config: SessionConfig) -> list[Any]:
    if provider == "CPUExecutionProvider":
        return ["CPUExecutionProvider"]
    options: dict[str, Any] = {}
    if provider == "CUDAExecutionProvider":
        options = {
            "device_id": config.device_id,
            "cudnn_conv_algo_search": CudnnConvAlgoSearch(config.cudnn_conv_algo_search).value,
            "enable_cuda_graph": "1" if config.cuda_graph else "0",
        }
    elif provider == "TensorrtExecutionProvider":
        options = {"device_id": config.device_id}
    options.update(dict(config.provider_options))
    # The CPU provider stays last so that ops the accelerator lacks still run (that is not a fallback).
    return [(provider, options), "CPUExecutionProvider"]


def _load_hint(provider: str) -> str | None:
    if provider == "TensorrtExecutionProvider":
        return "TensorRT needs its own libraries (libnvinfer) as well: " + _GPU_HINT
    return _GPU_HINT if provider != "CPUExecutionProvider" else None


def _load_failure_reason(log: str, provider: str) -> str:
    """The most specific cause ONNX Runtime logged for a provider that did not load."""
    missing = re.findall(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file", log)
    if missing:
        return f"{missing[0]} not found"
    for pattern in (r"(CUDA failure \d+: [^;\n]+)", r"(no CUDA-capable device[^\n]*)", r"(Require cuDNN [^.]+\.[^.]*\.)"):
        m = re.search(pattern, log)
        if m:
            return m.group(1).strip()
    if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") and not Path("/dev/nvidia0").exists():
        return "no NVIDIA device (/dev/nvidia0 is absent)"
    return "the provider failed to initialise (run with --debug to see ONNX Runtime's log)"


def create_session(model: str | os.PathLike[str] | bytes, config: SessionConfig | None = None,
                   profile_prefix: str | None = None,
                   optimized_model_path: str | os.PathLike[str] | None = None) -> tuple[Any, SessionInfo]:
    """Build an ``InferenceSession`` on ``config.provider`` and check that provider really runs it.

    ``profile_prefix``: turn on ONNX Runtime's profiler, writing to files that start with it (see
    :mod:`cnnkit.bench.profile`; ``session.end_profiling()`` returns the file). ``optimized_model_path``: ONNX
    Runtime writes the graph it actually runs there, after its optimisations and fusions.

    Raises :class:`ProviderError` when it does not (unless ``allow_fallback``), :class:`ModelFileError`
    for a missing or corrupt model.
    """
    from cnnkit._deps import capture_native_stderr

    config = config or SessionConfig()
    ort = _ort()
    provider = resolve_provider(config.provider)
    if isinstance(model, bytes):
        source: Any = model
        label = "<in-memory model>"
    else:
        path = require_file(model)
        source, label = str(path), str(path)
    if provider == "CPUExecutionProvider" and config.provider_options:
        # ONNX Runtime ignores them silently; an option that does nothing must not pass as one that does.
        raise ProviderError(f"the CPU provider takes no provider options, got {', '.join(k for k, _ in config.provider_options)}",
                            hint="its settings are session options: --threads, --inter-op-threads, --spinning, --no-arena")
    so, chain = session_options(config), _provider_chain(provider, config)
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)
    why_not: str | None = None
    if provider not in ort.get_available_providers():  # a plugin provider (onnxruntime-ep-*): by device
        why_not = _add_plugin_device(so, provider, dict(config.provider_options))
        if why_not is not None and not config.allow_fallback:
            raise ProviderError(f"{provider} cannot run here: {why_not}", reason=why_not,
                                hint="cnnkit doctor lists plugins and their devices; use --provider cpu"
                                     + (", or run OpenVINO itself: --runtime openvino" if "OpenVINO" in provider else ""))
        chain = None if why_not is None else ["CPUExecutionProvider"]
    python_log = io.StringIO()  # onnxruntime's Python wrapper print()s its "EP Error" fallback notice
    try:
        with capture_native_stderr(replay_on_error=False) as log, contextlib.redirect_stdout(python_log):
            session = ort.InferenceSession(source, so, providers=chain)
    except Exception as exc:  # noqa: BLE001 (ORT raises its own Fail/InvalidGraph/... types)
        detail = " ".join(str(exc).split())
        detail = shorten(re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", detail))
        if type(exc).__name__ == "RuntimeError":
            # A failed check inside ONNX Runtime while setting the session up: the options, not the file.
            raise SessionError(f"ONNX Runtime cannot create a session for {label} with these options: {detail}",
                               hint="check the session options and the provider's") from None
        if not isinstance(model, bytes) and sniff(model) not in (ONNX, "binary data"):  # a .keras, a text file, ...
            raise not_onnx_error(model, detail) from None
        raise ModelFileError(f"cannot load {label} in ONNX Runtime: {detail}", hint="is it a complete, valid .onnx file?") from None
    active = tuple(session.get_providers())
    info = SessionInfo(requested=provider, providers=active, options=config.to_dict())
    if active and active[0] != provider:
        reason = why_not or _load_failure_reason(log.text + python_log.getvalue(), provider)
        if not config.allow_fallback:
            raise ProviderError(
                f"{provider} was requested but the session runs on {active[0]}: {reason}",
                hint=_load_hint(provider),
                reason=reason,
            )
        info = SessionInfo(provider, active, fallback=True, fallback_reason=reason, options=config.to_dict())
    return session, info


def probe_model_bytes() -> bytes:
    """A one-op ONNX model (Relu on a float vector): enough to learn whether a provider loads."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    # IR 9 / opset 17: what every onnxruntime cnnkit supports reads (onnx 1.23 would write IR 14 by default).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def probe_provider(name: str) -> SessionInfo | ProviderError:
    """Whether ``name`` really runs a session here: its SessionInfo, or the error saying why not."""
    try:
        return create_session(probe_model_bytes(), SessionConfig(provider=name))[1]
    except ProviderError as exc:
        return exc
