"""Which operators take the time: ONNX Runtime's profiler on a separate, untimed pass.

The profiler adds work to every kernel, so its runs never feed latency statistics: :func:`profile_model`
builds its own session with profiling on, runs warm-up and profiled runs, and reads the profile file
ONNX Runtime writes (into a temporary folder, deleted afterwards). Figures are kernel times in
microseconds, each node's median over the profiled runs; shares are of their sum.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.runtimes.sessions import SessionConfig, create_session

TOP_OPERATORS = 10  # nodes kept per profile; every operator type is kept


@dataclass(frozen=True)
class OperatorTime:
    """One node: its kernel time per run (µs) and share of all kernel time."""

    node: str
    op_type: str
    us: float
    share: float


@dataclass(frozen=True)
class OperatorTypeTime:
    """All nodes of one operator type together."""

    op_type: str
    us: float
    share: float
    nodes: int


@dataclass(frozen=True)
class OperatorProfile:
    """One model at one batch size. ``run_ms``: median wall time of a profiled run (profiler overhead included)."""

    model: str
    batch_size: int
    runs: int
    kernel_us: float  # summed kernel time per run
    run_ms: float
    provider: str
    top_operators: tuple[OperatorTime, ...]
    by_type: tuple[OperatorTypeTime, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_profile(events: list[dict[str, Any]], last_runs: int | None = None,
                  top: int = TOP_OPERATORS) -> tuple[float, list[OperatorTime], list[OperatorTypeTime]]:
    """Kernel time per run from ONNX Runtime's profile events (the JSON list of its profile file).

    Only kernels inside the last ``last_runs`` ``model_run`` events count (None: every run), so warm-up
    runs in the same session are left out. Each node's time is its median over those runs (µs); an op
    type's is the sum of its nodes'. Returns (summed kernel µs per run, top ``top`` nodes, every op
    type), each sorted by time, longest first.
    """
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    if last_runs is not None:
        runs = runs[-last_runs:]
    if not runs:
        raise CnnkitError("the ONNX Runtime profile holds no model run", hint="profile at least one run")
    starts = np.array([r[0] for r in runs])
    ends = np.array([r[1] for r in runs])
    n = len(runs)
    per_node: dict[str, np.ndarray] = {}  # node -> its kernel time in each counted run
    node_type: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if i < 0 or e["ts"] > ends[i]:
            continue  # a kernel of a run that is not counted
        node = e["name"].removesuffix("_kernel_time")
        per_node.setdefault(node, np.zeros(n))[i] += e["dur"]
        node_type[node] = e.get("args", {}).get("op_name", "?")
    # The median run of each node: a run preempted by other work on a shared machine does not inflate it.
    medians = {node: float(np.median(times)) for node, times in per_node.items()}
    total = sum(medians.values())
    share = (lambda us: us / total) if total > 0 else (lambda us: 0.0)
    nodes = sorted(medians.items(), key=lambda kv: -kv[1])
    per_type: dict[str, list[float]] = defaultdict(list)
    for node, us in nodes:
        per_type[node_type[node]].append(us)
    types = sorted(((t, sum(v), len(v)) for t, v in per_type.items()), key=lambda kv: -kv[1])
    return (total, [OperatorTime(node, node_type[node], us, share(us)) for node, us in nodes[:top]],
            [OperatorTypeTime(t, us, share(us), k) for t, us, k in types])


def profile_model(model: str | os.PathLike[str], config: SessionConfig, x: np.ndarray, input_name: str,
                  runs: int = 10, warmup: int = 3, top: int = TOP_OPERATORS) -> OperatorProfile:
    """Profile ``runs`` runs of ``model`` on ``x`` after ``warmup`` runs, in a session of its own.

    The profile file goes to a temporary folder that is removed before returning.
    """
    if runs <= 0:
        raise CnnkitError(f"profiled runs must be positive, got {runs}")
    with tempfile.TemporaryDirectory(prefix="cnnkit-profile-") as tmp:
        session, info = create_session(model, config, profile_prefix=str(Path(tmp) / "ort-profile"))
        feeds = {input_name: x}
        for _ in range(warmup):
            session.run(None, feeds)
        wall = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            session.run(None, feeds)
            wall.append(time.perf_counter_ns() - t0)
        path = session.end_profiling()
        try:
            events = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise CnnkitError(f"cannot read ONNX Runtime's profile of {model}: {exc}") from None
        del session
    kernel_us, nodes, types = parse_profile(events, last_runs=runs, top=top)
    return OperatorProfile(str(model), int(x.shape[0]), runs, kernel_us, float(np.median(wall)) / 1e6, info.active,
                           tuple(nodes), tuple(types))
