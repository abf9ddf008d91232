"""``cnnkit doctor``: what is installed here and what actually works."""

from __future__ import annotations

import ctypes.util
import glob
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from cnnkit.envinfo import cpu_info, gpu_info, package_versions
from cnnkit.runtimes.base import runtime_versions
from cnnkit.runtimes.plugins import plugin_statuses
from cnnkit.runtimes.sessions import ProviderError, probe_provider, resolve_provider

# Shared libraries ONNX Runtime's CUDA and TensorRT providers load (any major version).
_GPU_LIBS = ("cudart", "cublas", "cublasLt", "cudnn", "cufft", "curand", "nvinfer")


@dataclass(frozen=True)
class ProviderStatus:
    name: str
    loads: bool
    reason: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    packages: dict[str, str | None]
    problems: tuple[str, ...]
    providers_listed: tuple[str, ...]
    providers: tuple[ProviderStatus, ...]
    gpu_libraries: dict[str, list[str]]
    gpus: list[dict[str, str]]
    cpu: dict[str, Any]
    python: str = field(default_factory=lambda: sys.version.split()[0])
    plugins: tuple[Any, ...] = ()  # PluginStatus of each installed onnxruntime-ep-* package
    plugin_providers: tuple[ProviderStatus, ...] = ()  # the providers those plugins add, and whether they run here
    runtimes: dict[str, str | None] = field(default_factory=dict)  # runtime -> installed version (None: not installed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def usable(self, provider: str) -> bool:
        return any(p.name == provider and p.loads for p in self.providers + self.plugin_providers)


def find_gpu_libraries() -> dict[str, list[str]]:
    """Where each CUDA/cuDNN/TensorRT library is found: the loader's search path and pip's nvidia-* wheels."""
    found: dict[str, list[str]] = {}
    site_dirs = [p for p in sys.path if p.endswith("site-packages")]
    for lib in _GPU_LIBS:
        hits = []
        located = ctypes.util.find_library(lib)
        if located:
            hits.append(located)
        for site in site_dirs:
            hits += sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib", f"lib{lib}.so*")))
            hits += sorted(glob.glob(os.path.join(site, "tensorrt*", f"lib{lib}.so*")))
        found[lib] = sorted(set(hits))
    return found


def run_doctor() -> DoctorReport:
    versions = package_versions()
    problems = []
    if versions.get("onnxruntime") and versions.get("onnxruntime-gpu"):
        problems.append(
            f"onnxruntime {versions['onnxruntime']} and onnxruntime-gpu {versions['onnxruntime-gpu']} are both installed: "
            "they share one import name and overwrite each other's files; uninstall both, then install one"
        )
    if not versions.get("onnxruntime") and not versions.get("onnxruntime-gpu"):
        problems.append("no onnxruntime package is installed: pip install onnxruntime-gpu (Linux x86_64) or onnxruntime")
        listed: tuple[str, ...] = ()
        statuses: tuple[ProviderStatus, ...] = ()
        plugins: tuple[Any, ...] = ()
        added: list[ProviderStatus] = []
    else:
        import onnxruntime as ort

        listed = tuple(ort.get_available_providers())
        out = []
        for name in listed:
            got = probe_provider(name)
            if isinstance(got, ProviderError):
                out.append(ProviderStatus(name, False, got.reason))
            else:
                out.append(ProviderStatus(name, True))
        plugins = tuple(plugin_statuses())
        added = []
        for plugin in plugins:
            for ep in plugin.ep_names:
                if ep in listed:
                    continue
                if plugin.error:
                    added.append(ProviderStatus(ep, False, f"the {plugin.distribution} plugin does not register: {plugin.error}"))
                elif not any(d.ep_name == ep for d in plugin.devices):
                    added.append(ProviderStatus(ep, False, f"the {plugin.distribution} plugin registers but exposes no "
                                                         f"device on this machine ({cpu_info()['model']})"))
                else:
                    got = probe_provider(ep)
                    added.append(ProviderStatus(ep, not isinstance(got, ProviderError),
                                              got.reason if isinstance(got, ProviderError) else None))
        statuses = tuple(out)
    return DoctorReport(
        packages=versions, problems=tuple(problems), providers_listed=listed, providers=statuses,
        gpu_libraries=find_gpu_libraries(), gpus=gpu_info(), cpu=cpu_info(),
        plugins=plugins, plugin_providers=tuple(added), runtimes=runtime_versions(),
    )


def check_provider(report: DoctorReport, name: str) -> tuple[str, bool]:
    """(full provider name, whether it runs a session here)."""
    full = resolve_provider(name)
    return full, report.usable(full)
