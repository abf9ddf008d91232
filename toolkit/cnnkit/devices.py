"""Benchmarks of one model on several devices, side by side: from a fleet run or from bench results of several
machines (e.g. a CI matrix's artifacts). No Ray needed here.

A device is named by the fleet node's ``device`` label (else its hostname), or for a plain bench result by the
name it is given (``--device NAME=FILE``), else its file's stem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError


@dataclass(frozen=True)
class DeviceRow:
    """One case (model, runtime, precision, batch size) on one device."""

    device: str
    cpu: str
    model: str
    runtime: str
    precision: str
    batch_size: int
    p50_ms: float
    p95_ms: float
    images_per_s: float
    noisy: bool  # p95 more than twice p50: a loaded or throttling machine


def device_results_from_files(paths: list[str | Path]) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, str]]]:
    """``(device, bench result)`` pairs and missing nodes from bench results and/or fleet results.

    A path may be written ``NAME=FILE`` to name the device; two results may not share a device name.
    """
    from cnnkit.bench import SCHEMA as BENCH_SCHEMA
    from cnnkit.distributed.fleet import SCHEMA as FLEET_SCHEMA

    pairs: list[tuple[str, dict[str, Any]]] = []
    missing: list[dict[str, str]] = []
    for item in paths:
        text = str(item)
        name, sep, file = text.partition("=")
        path = Path(file if sep and not Path(text).exists() else text)
        name = name if sep and not Path(text).exists() else path.stem
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CnnkitError(f"cannot read {path} as JSON ({getattr(exc, 'strerror', None) or exc})",
                              hint="give bench results (cnnkit bench --json) or fleet results (--engine ray)") from None
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema == FLEET_SCHEMA:
            pairs += [(e["device"], e["result"]) for e in data["entries"]]
            missing += list(data.get("missing", ()))
        elif schema == BENCH_SCHEMA:
            pairs.append((name, data))
        else:
            raise CnnkitError(f"{path} is not a cnnkit bench or fleet result (schema {schema!r})",
                              hint="give files written by cnnkit bench --json")
    names = [d for d, _ in pairs]
    twice = sorted({d for d in names if names.count(d) > 1})
    if twice:
        raise CnnkitError(f"two results for device {twice[0]}", hint="name each file's device: NAME=FILE")
    return pairs, missing


def device_rows(pairs: list[tuple[str, dict[str, Any]]]) -> list[DeviceRow]:
    rows = []
    for device, result in pairs:
        cpu = str(result.get("environment", {}).get("cpu", {}).get("model", "?"))
        for c in result["cases"]:
            s = c["stats"]
            rows.append(DeviceRow(device, cpu, Path(c["model"]).name, c.get("runtime", "onnxruntime"), c["precision"],
                                  int(c["batch_size"]), float(s["p50_ms"]), float(s["p95_ms"]),
                                  float(s["images_per_s"]), float(s["p95_ms"]) > 2 * float(s["p50_ms"])))
    return sorted(rows, key=lambda r: (r.model, r.runtime, r.precision, r.batch_size, r.device))


def best_device_per_batch(rows: list[DeviceRow]) -> dict[tuple[str, str, str, int], DeviceRow]:
    """The device with the highest throughput for each (model, runtime, precision, batch size)."""
    best: dict[tuple[str, str, str, int], DeviceRow] = {}
    for r in rows:
        key = (r.model, r.runtime, r.precision, r.batch_size)
        if key not in best or r.images_per_s > best[key].images_per_s:
            best[key] = r
    return best
