"""What a model costs in memory and in a cold start, measured in a fresh child process.

A child (``python -m cnnkit.bench.memory``) imports ONNX Runtime, reads its resident memory (RSS), creates the
session (timed: the cold session creation), runs one inference (timed: the cold first inference), reads
RSS again, then for every batch size resets the peak (``/proc/self/clear_refs`` "5" resets ``VmHWM``) and
reads the peak over a few runs. Nothing of the parent (TensorFlow, other models, the timing loops) is
counted. Where the peak cannot be reset, the process's ``ru_maxrss`` is reported and the method says so.
On CUDA the child also reads the GPU memory its process holds (``nvidia-smi``).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError

CHILD_TIMEOUT_S = 600


@dataclass(frozen=True)
class ChildMeasurement:
    """One fresh process: import, cold session creation and first inference; memory in MiB."""

    import_ms: float
    session_create_ms: float
    first_inference_ms: float
    first_batch_size: int
    rss_before_session_mb: float
    rss_after_session_mb: float
    rss_after_first_run_mb: float
    peak_rss_mb: dict[int, float]  # batch size -> peak RSS during the runs at that size
    peak_method: str  # "VmHWM reset per batch size" or "ru_maxrss (process lifetime)"
    provider: str
    cpu_mem_arena: bool
    gpu_mb: float | None = None  # GPU memory the process holds after the runs (CUDA), None elsewhere


@dataclass(frozen=True)
class MemoryResult:
    """Per model and arena setting: medians over ``processes`` children, and every child's figures."""

    model: str
    cpu_mem_arena: bool
    processes: int
    runs_per_batch: int
    rss_before_session_mb: float
    rss_after_session_mb: float
    peak_rss_mb: dict[int, float]
    peak_method: str
    gpu_mb: float | None = None
    children: tuple[ChildMeasurement, ...] = ()

    @property
    def session_mb(self) -> float:
        """What creating the session added to the process's RSS."""
        return self.rss_after_session_mb - self.rss_before_session_mb

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ColdStartResult:
    """Median over ``processes`` fresh processes, with every sample (ms)."""

    model: str
    processes: int
    first_batch_size: int
    import_ms: float
    session_create_ms: float
    first_inference_ms: float
    samples: dict[str, list[float]] = field(default_factory=dict)  # import_ms / session_create_ms / first_inference_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the child -------------------------------------------------------------------------------------------


def _status_kib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _rss_mb() -> float:
    kib = _status_kib("VmRSS")
    if kib is None:  # not Linux: the peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return kib / 1024.0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def _peak_mb(resettable: bool) -> float:
    if resettable:
        return (_status_kib("VmHWM") or 0.0) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def gpu_memory_mb(pid: int) -> float | None:
    """GPU memory (MiB) that process ``pid`` holds, from ``nvidia-smi``; None where it cannot be read."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    used = [float(parts[1]) for parts in (line.split(",") for line in out.splitlines())
            if len(parts) == 2 and parts[0].strip() == str(pid) and parts[1].strip().replace(".", "").isdigit()]
    return sum(used) if used else 0.0


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter_ns()
    import onnxruntime  # noqa: F401  (the import is part of a cold start)

    from cnnkit.runtimes.sessions import SessionConfig, create_session

    import_ms = (time.perf_counter_ns() - t0) / 1e6
    config = SessionConfig.from_dict(spec["session"])
    dtype = np.dtype(spec["dtype"])
    rng = np.random.default_rng(spec["seed"])
    make = lambda b: rng.integers(0, 256, (b, *spec["image_shape"])).astype(dtype)  # noqa: E731
    first = spec["first_batch_size"]
    x_first = make(first)
    before = _rss_mb()
    t0 = time.perf_counter_ns()
    session, info = create_session(spec["model"], config)
    create_ms = (time.perf_counter_ns() - t0) / 1e6
    after = _rss_mb()
    name = spec["input_name"]
    t0 = time.perf_counter_ns()
    session.run(None, {name: x_first})
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    after_first = _rss_mb()
    resettable = _reset_peak()
    peaks = {}
    for b in spec["batch_sizes"]:
        x = make(b)  # made before the reset: the peak counts the input batch, as a server holds it too
        if resettable:
            _reset_peak()
        for _ in range(spec["runs"]):
            session.run(None, {name: x})
        del x
        peaks[b] = _peak_mb(resettable)
    from cnnkit.runtimes.onnxruntime import session_runner_info  # after the measurements: not part of them

    gpu = gpu_memory_mb(os.getpid()) if session_runner_info(info, config, precision="model").on_gpu else None
    return asdict(ChildMeasurement(
        import_ms, create_ms, first_ms, first, before, after, after_first, peaks,
        "VmHWM reset per batch size" if resettable else "ru_maxrss (process lifetime)", info.active,
        config.cpu_mem_arena, gpu))


def _main() -> None:
    """Child entry point: a JSON spec on stdin, one JSON line on stdout (or an error line, exit 1)."""
    from cnnkit.errors import CnnkitError as Error

    spec = json.loads(sys.stdin.read())
    try:
        out = {"ok": _child(spec)}
    except Error as exc:
        out = {"error": exc.one_line()}
    sys.stdout.write(json.dumps(out) + "\n")


# --- the parent ------------------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    # The child must import this very cnnkit, wherever it was imported from (a checkout on PYTHONPATH too).
    root = str(Path(__file__).resolve().parents[2])  # the folder holding cnnkit/
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def measure_in_child(model: str | os.PathLike[str], session: dict[str, Any], image_shape: tuple[int, ...], dtype: str,
                     input_name: str, batch_sizes: tuple[int, ...], first_batch_size: int, runs: int = 5,
                     seed: int = 0) -> ChildMeasurement:
    """One fresh Python process measuring ``model`` (``session``: a ``SessionConfig.to_dict()``)."""
    spec = {"model": str(model), "session": session, "image_shape": list(image_shape), "dtype": dtype,
            "input_name": input_name, "batch_sizes": list(batch_sizes), "first_batch_size": first_batch_size,
            "runs": runs, "seed": seed}
    try:
        proc = subprocess.run([sys.executable, "-m", "cnnkit.bench.memory"], input=json.dumps(spec), capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT_S, env=_child_env())
    except subprocess.TimeoutExpired:
        raise CnnkitError(f"measuring {model} in a fresh process took over {CHILD_TIMEOUT_S} s",
                          hint="use smaller --batch-sizes") from None
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        out = json.loads(line)
    except ValueError:
        out = {}
    if "error" in out:
        raise CnnkitError(f"measuring {model} in a fresh process: {out['error']}")
    if proc.returncode != 0 or "ok" not in out:
        tail = " ".join(proc.stderr.strip().splitlines()[-1:]) or f"exit status {proc.returncode}"
        raise CnnkitError(f"the process measuring {model}'s memory and cold start failed: {tail}",
                          hint="run with --debug; the model may need more memory than is free")
    d = out["ok"]
    return ChildMeasurement(**(d | {"peak_rss_mb": {int(k): v for k, v in d["peak_rss_mb"].items()}}))


def summarize_memory(model: str, children: list[ChildMeasurement], runs: int) -> MemoryResult:
    """Medians over children that share one arena setting."""
    med = lambda xs: float(np.median(xs))  # noqa: E731
    sizes = children[0].peak_rss_mb.keys()
    gpus = [c.gpu_mb for c in children if c.gpu_mb is not None]
    return MemoryResult(
        model=model, cpu_mem_arena=children[0].cpu_mem_arena, processes=len(children), runs_per_batch=runs,
        rss_before_session_mb=med([c.rss_before_session_mb for c in children]),
        rss_after_session_mb=med([c.rss_after_session_mb for c in children]),
        peak_rss_mb={b: med([c.peak_rss_mb[b] for c in children]) for b in sizes},
        peak_method=children[0].peak_method, gpu_mb=med(gpus) if gpus else None, children=tuple(children))


def summarize_cold_start(model: str, children: list[ChildMeasurement]) -> ColdStartResult:
    keys = ("import_ms", "session_create_ms", "first_inference_ms")
    samples = {k: [getattr(c, k) for c in children] for k in keys}
    return ColdStartResult(model, len(children), children[0].first_batch_size,
                           *(float(np.median(samples[k])) for k in keys), samples=samples)


if __name__ == "__main__":
    _main()
