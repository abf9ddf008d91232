"""``cnnkit bench --engine ray --nodes all|LABEL=VALUE``: the same benchmark on every selected node of a Ray cluster.

One Ray task per node, pinned to it (``NodeAffinitySchedulingStrategy``, hard) and asking for all of the node's
CPUs, so that no two benchmarks (nor anything else Ray schedules) share a node at once. The model travels
through Ray's object store (the nodes need no shared file system); each node writes it to a temporary file and
runs :func:`cnnkit.bench.benchmark.run_benchmark`, whose result carries that node's own environment fingerprint. The
results merge into one :class:`FleetResult`: one entry per node that answered, and the nodes that did not
(died, unreachable, failed), each with the reason. The nodes run at the same time; simulated nodes of one
machine (``ray.cluster_utils.Cluster``) therefore share its cores, and their figures say nothing about speed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cnnkit.bench.result import BenchResult
from cnnkit.errors import CnnkitError, shorten

SCHEMA = "cnnkit.fleet-bench/1"
KILL_NODE_ENV = "CNNKIT_RAY_KILL_NODE"  # fault injection for tests: LABEL=VALUE of a node whose raylet the task kills


@dataclass(frozen=True)
class FleetEntry:
    """One node's benchmark: ``device`` names it in tables (its ``device`` label, else its hostname)."""

    device: str
    node_id: str
    hostname: str
    labels: dict[str, str]
    result: BenchResult  # the environment measured on that node


@dataclass(frozen=True)
class FleetResult:
    schema: str
    created: str
    selector: str
    entries: tuple[FleetEntry, ...]
    missing: tuple[dict[str, str], ...] = ()  # {"device", "node_id", "reason"} for each node that gave no result
    engine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the result") -> FleetResult:
        from cnnkit.results.load import from_dict

        return from_dict(data, source, expect=SCHEMA)


def parse_selector(text: str) -> tuple[str, str] | None:
    """``all`` -> None; ``LABEL=VALUE`` -> (label, value); anything else is a one-line error."""
    if text == "all":
        return None
    label, sep, value = text.partition("=")
    if not sep or not label.strip() or not value.strip():
        raise CnnkitError(f"--nodes {text!r}: expected all or LABEL=VALUE",
                          hint="e.g. --nodes all, or --nodes device=jetson (labels given with ray start --labels)")
    return label.strip(), value.strip()


def select_nodes(cluster: list[dict[str, Any]], selector: tuple[str, str] | None, nodes: str) -> list[dict[str, Any]]:
    """The nodes of ``cluster`` that ``selector`` (``--nodes nodes``, parsed) picks; none is a one-line error that
    names the labels the cluster's nodes have."""
    if selector is None:
        chosen = cluster
    else:
        label, value = selector
        chosen = [n for n in cluster if str((n.get("Labels") or {}).get(label)) == value]
    if not chosen:
        labels = sorted({f"{k}={v}" for n in cluster for k, v in (n.get("Labels") or {}).items()
                         if not k.startswith("ray.io/")})
        raise CnnkitError(f"--nodes {nodes}: no node of the cluster's {len(cluster)} has that label",
                          hint="labels here: " + (", ".join(labels[:8]) or "none (ray start --labels)"))
    return chosen


def device_name(node: dict[str, Any]) -> str:
    labels = node.get("Labels") or {}
    return str(labels.get("device") or node.get("NodeManagerHostname") or node["NodeID"][:8])


def _bench_on_node(config_dict: dict[str, Any], models: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Runs on the pinned node: the models into a temporary folder, the benchmark, the user's paths put back."""
    import tempfile

    from cnnkit.bench.benchmark import run_benchmark

    _maybe_kill_node()
    config = config_from_dict(config_dict)
    with tempfile.TemporaryDirectory(prefix="cnnkit-fleet-") as tmp:
        local = []
        for i, (name, blob) in enumerate(models):
            path = Path(tmp) / f"{i}-{Path(name).name}"
            path.write_bytes(blob)
            local.append(path)
        result = run_benchmark(replace(config, models=tuple(local))).to_dict()
    back = {str(p): name for p, (name, _) in zip(local, models, strict=True)}
    text = json.dumps(result)
    for tmp_path, name in back.items():
        text = text.replace(json.dumps(tmp_path)[1:-1], json.dumps(name)[1:-1])
    return json.loads(text)


def _maybe_kill_node() -> None:
    """Fault injection (tests): on the node labelled as the variable says, kill this node's raylet (the node dies)."""
    target = os.environ.get(KILL_NODE_ENV)
    if not target:
        return
    import ray

    label, _, value = target.partition("=")
    node_id = ray.get_runtime_context().get_node_id()
    labels = next((n.get("Labels") or {} for n in ray.nodes() if n["NodeID"] == node_id), {})
    if str(labels.get(label)) == value:
        import signal

        os.kill(os.getppid(), signal.SIGKILL)  # a worker's parent is its node's raylet
        time.sleep(60)


def config_to_dict(config: Any) -> dict[str, Any]:
    d = asdict(config)
    d["session"] = config.session.to_dict()
    d["runtimes"] = [r.to_dict() for r in config.runtimes]
    return json.loads(json.dumps(d, default=str))


def config_from_dict(d: dict[str, Any]) -> Any:
    from cnnkit.bench.config import BenchConfig
    from cnnkit.runtimes.registry import RuntimeChoice
    from cnnkit.runtimes.sessions import SessionConfig

    known = set(BenchConfig.__dataclass_fields__)
    values = {k: v for k, v in d.items() if k in known}
    values["models"] = tuple(Path(m) for m in values["models"])
    values["session"] = SessionConfig.from_dict(values["session"])
    values["runtimes"] = tuple(RuntimeChoice(**r) for r in values["runtimes"])
    for key in ("batch_sizes", "concurrency"):
        if values.get(key) is not None:
            values[key] = tuple(values[key])
    if values.get("tflite"):
        values["tflite"] = Path(values["tflite"])
    return BenchConfig(**values)


def run_fleet_benchmark(config: Any, nodes: str = "all", address: str | None = None,
                        notify: Any = None) -> FleetResult:
    """``config`` (a :class:`BenchConfig`) on every node ``nodes`` selects, one pinned task per node, at once."""
    from datetime import datetime, timezone

    from cnnkit.distributed.cluster import alive_nodes, ray_cluster, worker_env

    selector = parse_selector(nodes)
    if config.tflite is not None or any(r.runtime == "litert" for r in config.runtimes):
        raise CnnkitError("bench --engine ray ships .onnx models only", hint="drop --runtime litert / --tflite")
    say = notify or (lambda _m: None)
    blobs = []
    for m in config.models:
        try:
            blobs.append((str(m), Path(m).read_bytes()))
        except OSError as exc:
            raise CnnkitError(f"cannot read model {m}: {exc.strerror or exc}") from None
    with ray_cluster(address) as ray:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cluster = alive_nodes(ray)
        chosen = select_nodes(cluster, selector, nodes)
        say(f"benchmarking on {len(chosen)} node(s): {', '.join(device_name(n) for n in chosen)}")
        task = ray.remote(_bench_on_node)
        refs_models = ray.put(blobs)
        started = time.perf_counter()
        pending = {}
        for n in chosen:
            cpus = max(1.0, float((n.get("Resources") or {}).get("CPU", 1)))
            ref = task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                num_cpus=cpus,  # the whole node: nothing else of Ray's runs beside the benchmark
                max_retries=0,  # a benchmark that died mid-run is reported, not silently rerun elsewhere
                runtime_env={"env_vars": worker_env()} if worker_env() else None,
            ).remote(config_to_dict(config), refs_models)
            pending[ref] = n
        entries, missing = [], []
        for ref, n in pending.items():
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                missing.append({"device": device_name(n), "node_id": n["NodeID"], "reason": node_failure_reason(exc)})
                continue
            entries.append(FleetEntry(device_name(n), n["NodeID"], str(n.get("NodeManagerHostname", "")),
                                      {k: str(v) for k, v in (n.get("Labels") or {}).items()},
                                      BenchResult.from_dict(result, f"the benchmark of node {device_name(n)}")))
        engine = {"engine": "ray", "ray_version": ray.__version__, "address": address or os.environ.get("RAY_ADDRESS")
                  or "local", "nodes_in_cluster": len(cluster), "nodes_selected": len(chosen),
                  "wall_s": time.perf_counter() - started}
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return FleetResult(SCHEMA, created, nodes, tuple(entries), tuple(missing), engine)


def node_failure_reason(exc: BaseException) -> str:
    """Why a node's task gave no result, in one line."""
    name = type(exc).__name__
    if "NodeDied" in name or "WorkerCrashed" in name or "ActorDied" in name or "ObjectLost" in name:
        return f"the node died or lost its worker during the benchmark ({name})"
    cause = getattr(exc, "cause", None) or exc
    return shorten(f"{type(cause).__name__}: {cause}")
