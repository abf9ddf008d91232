"""``cnnkit verify --engine ray --nodes all|LABEL=VALUE``: every selected node of a Ray cluster verifies the bundle.

As the fleet benchmark (:mod:`cnnkit.distributed.fleet`): one Ray task per node, pinned to it, the bundle (and
``--model``) through Ray's object store, so the nodes need no shared file system. Each node opens the bundle itself
(every hash checked there), runs :func:`cnnkit.verify.check.verify_bundle` and returns its result with that node's
fingerprint: one row per device. A node that fails to verify (a runtime it lacks) or dies is a row with the reason.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cnnkit.distributed.fleet import device_name, node_failure_reason, parse_selector, select_nodes
from cnnkit.errors import CnnkitError
from cnnkit.verify.check import VerifyConfig, VerifyResult

SCHEMA = "cnnkit.fleet-verify/1"


@dataclass(frozen=True)
class FleetVerifyRow:
    device: str
    node_id: str
    hostname: str
    result: VerifyResult | None  # None: the node gave no result (error says why)
    error: str | None = None


@dataclass(frozen=True)
class FleetVerifyResult:
    schema: str
    passed: bool  # every selected node verified and passed
    created: str
    selector: str
    bundle: str
    rows: tuple[FleetVerifyRow, ...]
    engine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _verify_on_node(config: dict[str, Any], bundle: tuple[str, bytes], model: tuple[str, bytes] | None) -> dict[str, Any]:
    """Runs on the pinned node: the bundle (and model) into a temporary folder, verify, the user's paths put back."""
    import tempfile

    from cnnkit.errors import CnnkitError as Error
    from cnnkit.verify.check import verify_bundle

    with tempfile.TemporaryDirectory(prefix="cnnkit-fleet-verify-") as tmp:
        local_bundle = Path(tmp) / Path(bundle[0]).name
        local_bundle.write_bytes(bundle[1])
        local_model = None
        if model is not None:
            local_model = Path(tmp) / Path(model[0]).name
            local_model.write_bytes(model[1])
        try:
            result = verify_bundle(replace(config["config"], bundle=local_bundle, model=local_model))
        except Error as exc:  # the node's own one-line error: a row, not a crash of the fleet
            return {"error": exc.one_line()}
    out = result.to_dict()
    out["bundle"]["path"] = bundle[0]
    if model is not None:
        out["model"]["path"] = model[0]
    return {"result": out}


def verify_fleet(config: VerifyConfig, nodes: str = "all", address: str | None = None) -> FleetVerifyResult:
    """``config`` on every node ``nodes`` selects, one pinned task per node, at once."""
    from datetime import UTC, datetime

    from pydantic import TypeAdapter

    from cnnkit.distributed.cluster import alive_nodes, ray_cluster, worker_env

    selector = parse_selector(nodes)
    blobs = {}
    for what, path in (("bundle", config.bundle), ("model", config.model)):
        if path is None:
            continue
        try:
            blobs[what] = (str(path), Path(path).read_bytes())
        except OSError as exc:
            raise CnnkitError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with ray_cluster(address) as ray:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cluster = alive_nodes(ray)
        chosen = select_nodes(cluster, selector, nodes)
        task = ray.remote(_verify_on_node)
        bundle_ref, model_ref = ray.put(blobs["bundle"]), ray.put(blobs.get("model"))
        started = time.perf_counter()
        pending = {}
        for n in chosen:
            ref = task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False), num_cpus=1, max_retries=0,
                runtime_env={"env_vars": worker_env()} if worker_env() else None,
            ).remote({"config": config}, bundle_ref, model_ref)
            pending[ref] = n
        rows = []
        adapter = TypeAdapter(VerifyResult)
        for ref, n in pending.items():
            base = (device_name(n), n["NodeID"], str(n.get("NodeManagerHostname", "")))
            try:
                answer = ray.get(ref)
            except ray.exceptions.RayError as exc:
                rows.append(FleetVerifyRow(*base, result=None, error=node_failure_reason(exc)))
                continue
            if "error" in answer:
                rows.append(FleetVerifyRow(*base, result=None, error=answer["error"]))
            else:
                rows.append(FleetVerifyRow(*base, result=adapter.validate_python(answer["result"])))
        engine = {"engine": "ray", "ray_version": ray.__version__,
                  "address": address or os.environ.get("RAY_ADDRESS") or "local", "nodes_in_cluster": len(cluster),
                  "nodes_selected": len(chosen), "wall_s": time.perf_counter() - started}
    passed = bool(rows) and all(r.result is not None and r.result.passed for r in rows)
    return FleetVerifyResult(SCHEMA, passed, datetime.now(UTC).isoformat(timespec="seconds"), nodes,
                             str(config.bundle), tuple(sorted(rows, key=lambda r: r.device)), engine)
