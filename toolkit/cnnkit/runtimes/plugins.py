"""ONNX Runtime execution providers shipped as plugin packages (``onnxruntime-ep-*``, ONNX Runtime >= 1.23).

A plugin package holds a shared library that ``onnxruntime.register_execution_provider_library`` loads; its
providers then offer devices (``onnxruntime.get_ep_devices()``), and a session uses one through
``SessionOptions.add_provider_for_devices``. A plugin may register and still offer no device on this machine
(OpenVINO's on an AMD CPU): that is reported, never a crash.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from cnnkit.errors import shorten

PREFIX = "onnxruntime-ep-"
_registered: dict[str, str] = {}  # registration name -> library path, for this process


@dataclass(frozen=True)
class PluginDevice:
    ep_name: str
    device_type: str  # CPU, GPU, NPU
    vendor: str
    metadata: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.metadata.items())
        return f"{self.device_type} ({self.vendor})" + (f" [{extra}]" if extra else "")


@dataclass(frozen=True)
class PluginStatus:
    """One installed ``onnxruntime-ep-*`` package: its providers, library, and the devices they expose here."""

    distribution: str
    version: str
    module: str | None
    library: str | None
    ep_names: tuple[str, ...]
    devices: tuple[PluginDevice, ...] = ()
    error: str | None = None  # why it could not be registered

    @property
    def registration_name(self) -> str:
        return self.distribution

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def installed_plugins() -> list[tuple[str, str, str | None]]:
    """(distribution, version, top-level module) of every installed ``onnxruntime-ep-*`` package."""
    out = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(PREFIX) and name not in out:
            top = (dist.read_text("top_level.txt") or "").split()
            out[name] = (name, dist.version, top[0] if top else name.replace("-", "_"))
    return sorted(out.values())


def _ort() -> Any:
    from cnnkit._deps import require_onnxruntime

    return require_onnxruntime()


def load_plugin(distribution: str, version: str, module: str | None) -> PluginStatus:
    """Register the plugin's library with ONNX Runtime (once per process) and list the devices it exposes."""
    ort = _ort()
    try:
        mod = importlib.import_module(module or distribution.replace("-", "_"))
        library = mod.get_library_path()
        ep_names = tuple(mod.get_ep_names()) if hasattr(mod, "get_ep_names") else (mod.get_ep_name(),)
    except Exception as exc:  # noqa: BLE001 (a broken or foreign package)
        return PluginStatus(distribution, version, module, None, (), error=shorten(f"cannot read its library path: {exc}"))
    if distribution not in _registered:
        from cnnkit._deps import capture_native_stderr

        try:
            with capture_native_stderr(replay_on_error=False):
                ort.register_execution_provider_library(distribution, library)
        except Exception as exc:  # noqa: BLE001 (ORT's Fail)
            if "already registered" not in str(exc):
                return PluginStatus(distribution, version, module, library, ep_names,
                                    error=shorten(exc, 300))
        _registered[distribution] = library
    devices = tuple(
        PluginDevice(d.ep_name, d.device.type.name, d.device.vendor or d.ep_vendor, {k: str(v) for k, v in dict(d.ep_metadata).items()})
        for d in ort.get_ep_devices() if d.ep_name in ep_names
    )
    return PluginStatus(distribution, version, module, library, ep_names, devices)


def plugin_statuses() -> list[PluginStatus]:
    return [load_plugin(*p) for p in installed_plugins()]


def find_plugin(provider: str) -> PluginStatus | None:
    """The installed plugin that provides ``provider`` (a full EP name), registered; None if none does."""
    for dist, version, module in installed_plugins():
        status = load_plugin(dist, version, module)
        if provider in status.ep_names:
            return status
    return None


def plugin_devices(provider: str, device_type: str | None = None) -> list[Any]:
    """ONNX Runtime's ``OrtEpDevice`` objects for ``provider`` (registered first), CPU ones first."""
    ort = _ort()
    devices = [d for d in ort.get_ep_devices() if d.ep_name == provider]
    if device_type:
        devices = [d for d in devices if d.device.type.name == device_type.upper()]
    return sorted(devices, key=lambda d: d.device.type.name != "CPU")
