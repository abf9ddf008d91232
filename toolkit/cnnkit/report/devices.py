"""Benchmarks of one model on several devices, side by side: from a fleet run or from bench results of several
machines (e.g. a CI matrix's artifacts). No Ray needed here.

A device is named by the fleet node's ``device`` label (else its hostname), or for a plain bench result by the
folder its file is in (one folder per machine, as a CI matrix's artifacts are laid out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.runtimes.registry import runtime_label

if TYPE_CHECKING:
    from cnnkit.bench.result import BenchResult

FLEET_SCHEMA = "cnnkit.fleet-bench/1"  # cnnkit.distributed.fleet.SCHEMA (not imported: that module needs no Ray,
# but this one must not even look like it does)


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

    @property
    def label(self) -> str:
        """The runtime and the precision it ran in, the model's own included: ``openvino:bf16``, ``onnxruntime:fp16``."""
        return runtime_label(self.runtime, self.precision, model_precision=True)


def device_results(results: list[tuple[Path, Any]]) -> tuple[list[tuple[str, BenchResult]], list[dict[str, str]]]:
    """``(device, bench result)`` pairs and the missing nodes, from ``(path, result)`` pairs of typed fleet and bench
    results (other results are passed over). Every fleet entry is a device. Bench results are devices when they come from two or more folders
    (a CI matrix's artifacts: one folder per job), each named after its folder; from one folder they are one
    machine's runs and no device comparison is made of them."""
    pairs: list[tuple[str, BenchResult]] = []
    missing: list[dict[str, str]] = []
    benches = []
    for path, result in results:
        if result.schema == FLEET_SCHEMA:
            pairs += [(e.device, e.result) for e in result.entries]
            missing += list(result.missing)
        elif result.schema == "cnnkit.bench/1":
            benches.append((Path(path), result))
    if len({p.parent.resolve() for p, _ in benches}) > 1:
        names = [p.parent.name for p, _ in benches]
        pairs += [(n if names.count(n) == 1 else f"{p.parent.name}/{p.stem}", d)
                  for n, (p, d) in zip(names, benches, strict=True)]
    return pairs, missing


def device_rows(pairs: list[tuple[str, BenchResult]]) -> list[DeviceRow]:
    rows = []
    for device, result in pairs:
        cpu = str(result.environment.get("cpu", {}).get("model", "?"))
        for c in result.cases:
            s = c.stats
            rows.append(DeviceRow(device, cpu, Path(c.model).name, c.runtime, c.precision, c.batch_size, s.p50_ms,
                                  s.p95_ms, s.images_per_s, s.p95_ms > 2 * s.p50_ms))
    return sorted(rows, key=lambda r: (r.model, r.runtime, r.precision, r.batch_size, r.device))


def best_device_per_batch(rows: list[DeviceRow]) -> dict[tuple[str, str, str, int], DeviceRow]:
    """The device with the highest throughput for each (model, runtime, precision, batch size)."""
    best: dict[tuple[str, str, str, int], DeviceRow] = {}
    for r in rows:
        key = (r.model, r.runtime, r.precision, r.batch_size)
        if key not in best or r.images_per_s > best[key].images_per_s:
            best[key] = r
    return best


def device_section(pairs: list[tuple[str, BenchResult]], missing: list[dict[str, str]]) -> list[str]:
    """Markdown: each device's CPU, the latency/throughput table, the best device per batch size, the missing."""
    from cnnkit.report.sections import md_table

    if not pairs and not missing:
        return []
    rows = device_rows(pairs)
    parts = ["## Devices", "", md_table(["device", "CPU", "onnxruntime", "platform"], [
        [d, str(r.environment.get("cpu", {}).get("model", "?")),
         str(r.environment.get("packages", {}).get("onnxruntime-gpu")
             or r.environment.get("packages", {}).get("onnxruntime")),
         str(r.environment.get("platform", "?"))] for d, r in pairs]), ""]
    if rows:
        parts += [md_table(["device", "model", "runtime", "precision", "batch", "p50 ms", "p95 ms", "images/s"],
                           [[r.device, r.model, r.runtime, r.precision, str(r.batch_size), f"{r.p50_ms:.3f}",
                             f"{r.p95_ms:.3f}" + (" (noisy)" if r.noisy else ""), f"{r.images_per_s:,.0f}"]
                            for r in rows]), ""]
        best = best_device_per_batch(rows)
        parts += ["Best device per batch size (highest images/s):", "",
                  md_table(["model", "runtime", "precision", "batch", "best device", "images/s", "next best"],
                           [[k[0], k[1], k[2], str(k[3]), b.device, f"{b.images_per_s:,.0f}", _runner_up(rows, b)]
                            for k, b in sorted(best.items())]), ""]
    for m in missing:
        parts += [f"- missing: **{m['device']}** ({m['node_id'][:12]}): {m['reason']}"]
    return parts + ([""] if missing else [])


def _runner_up(rows: list[DeviceRow], best: DeviceRow) -> str:
    others = [r for r in rows if (r.model, r.runtime, r.precision, r.batch_size)
              == (best.model, best.runtime, best.precision, best.batch_size) and r is not best]
    if not others:
        return "-"
    second = max(others, key=lambda r: r.images_per_s)
    return f"{second.device} ({best.images_per_s / second.images_per_s:.2f}x slower)" if second.images_per_s else second.device


def device_plots(pairs: list[tuple[str, BenchResult]], plot_png: Any) -> dict[str, bytes]:
    """Latency (p50, band to p95) and throughput vs batch size, one line per device (and model, runtime)."""
    from cnnkit.report.bench import batch_ticks

    rows = device_rows(pairs)
    if len({r.device for r in rows}) < 2:
        return {}
    series: dict[str, list[DeviceRow]] = {}
    for r in rows:
        several = len({(x.model, x.runtime, x.precision) for x in rows}) > 1
        label = r.device + (f" {r.model} {r.label}" if several else "")
        series.setdefault(label, []).append(r)
    sizes = sorted({r.batch_size for r in rows})

    def latency(ax: Any) -> None:
        for label, rs in series.items():
            b = [r.batch_size for r in rs]
            line = ax.plot(b, [r.p50_ms for r in rs], marker="o", label=label)[0]
            ax.fill_between(b, [r.p50_ms for r in rs], [r.p95_ms for r in rs], color=line.get_color(), alpha=0.25)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="latency, ms (p50; band to p95)",
               title="Latency per device")
        batch_ticks(ax, sizes)
        ax.legend(fontsize=7)

    def throughput(ax: Any) -> None:
        for label, rs in series.items():
            ax.plot([r.batch_size for r in rs], [r.images_per_s for r in rs], marker="o", label=label)
        ax.set(xscale="log", xlabel="batch size", ylabel="images/s (batch / p50)", title="Throughput per device")
        batch_ticks(ax, sizes)
        ax.legend(fontsize=7)

    return {"device_latency.png": plot_png(latency), "device_throughput.png": plot_png(throughput)}
