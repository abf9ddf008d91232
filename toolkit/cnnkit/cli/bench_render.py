"""Tables of ``cnnkit bench``: latency (narrow for an 80-column terminal, or ``--wide``), operator profile,
memory, cold start, throughput under concurrency, and the noise flag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.cli.render import console

NARROW_NAME = 18  # characters of a model's file name in the narrow layout


def _table(*cols: str, left: int = 1) -> Any:
    from rich.table import Table

    table = Table(title_justify="left", pad_edge=False, box=None, header_style="bold")
    for i, col in enumerate(cols):
        table.add_column(col, justify="left" if i < left else "right", no_wrap=True)
    return table


def rate(images_per_s: float) -> str:
    """Images/s with thousands separators, and three significant digits below 100 (a ResNet50 on 2 cores is ~1.2)."""
    return f"{images_per_s:,.0f}" if images_per_s >= 100 else f"{images_per_s:.3g}"


def _name(model: str, wide: bool) -> str:
    name = Path(model).name
    return name if wide or len(name) <= NARROW_NAME else name[: NARROW_NAME - 1] + "…"


def runs_on(c: Any, several_runtimes: bool) -> str:
    """``CPU``, ``ORT CPU`` (beside other runtimes), ``OpenVINO CPU``: where a case ran."""
    from cnnkit.runtimes.sessions import provider_label

    label = provider_label(c.provider)
    return f"ORT {label}" if several_runtimes and getattr(c, "runtime", "onnxruntime") == "onnxruntime" else label


def latency_table(result: Any, wide: bool) -> None:
    """One row per case. The narrow layout (80 columns) states above the table what all rows share and drops
    columns that would not fit; ``wide`` shows everything."""
    from cnnkit.stats import ADVICE, noise_reasons

    several = len({getattr(c, "runtime", "onnxruntime") for c in result.cases}) > 1
    labels = {(runs_on(c, several), c.precision) for c in result.cases}
    models = {c.model for c in result.cases}
    noisy = {}
    for c in result.cases:
        reasons = noise_reasons(c.samples_ns, c.stats.p50_ms, c.stats.p99_ms, getattr(c, "round_p50_ms", ()))
        if reasons:
            noisy[(c.model, runs_on(c, several), c.precision, c.batch_size)] = reasons
    cols = ["model", "runs on", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s", "runs", "noise"]
    if wide:
        cols = ["model", "precision", "provider", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ± sd ms", "min ms",
                "images/s", "runs", "noise"]
    else:
        shared = []
        if len(models) == 1:
            cols.remove("model")
            shared.append(Path(next(iter(models))).name)
        if len(labels) == 1:
            cols.remove("runs on")
            where, precision = next(iter(labels))
            shared.append(f"{precision} on {where}")
        if "model" in cols and "runs on" in cols:
            cols.remove("p90 ms")
            cols.remove("runs")
        console.print(", ".join(shared) + ("; " if shared else "") + "--wide: every column")
    table = _table(*cols, left=sum(c in ("model", "runs on", "precision", "provider") for c in cols))
    for c in result.cases:
        s = c.stats
        key = (c.model, runs_on(c, several), c.precision, c.batch_size)
        values = {"model": Path(c.model).name if wide else _name(c.model, wide), "precision": c.precision,
                  "provider": runs_on(c, several), "runs on": f"{runs_on(c, several)} {c.precision}",
                  "batch": str(c.batch_size), "p50 ms": f"{s.p50_ms:.4g}", "p90 ms": f"{s.p90_ms:.4g}",
                  "p99 ms": f"{s.p99_ms:.4g}", "mean ± sd ms": f"{s.mean_ms:.4g} ± {s.std_ms:.2g}", "min ms": f"{s.min_ms:.4g}",
                  "images/s": rate(s.images_per_s), "runs": f"{s.count:,}", "noise": "NOISY" if key in noisy else ""}
        table.add_row(*(values[col] for col in cols))
    console.print(table)
    for (model, where, precision, b), reasons in noisy.items():
        console.print(f"[yellow]NOISY:[/] {Path(model).name} ({where} {precision}) batch {b}: {'; '.join(reasons)}")
    if noisy:
        console.print(f"  {ADVICE}")


def profile_tables(result: Any, wide: bool, top: int = 5) -> None:
    if not result.profiles:
        return
    console.print("\n[bold]Operator profile[/] (ONNX Runtime's profiler on a separate session; kernel µs per run, "
                  "each node's median; "
                  "not part of the latency figures)")
    for p in result.profiles:
        types = ", ".join(f"{t.op_type} {t.share:.0%} ({t.us:,.0f} µs)" for t in p.by_type[: (99 if wide else 4)])
        console.print(f"{_name(p.model, wide)} batch {p.batch_size}: {p.kernel_us:,.0f} µs of kernels per run, "
                      f"{p.runs} profiled runs")
        console.print(f"  by type: {types}")
        table = _table("node", "op type", "µs", "share", left=2)
        for o in p.top_operators[:top]:
            table.add_row(o.node if wide or len(o.node) <= 36 else o.node[:35] + "…", o.op_type, f"{o.us:,.1f}",
                          f"{o.share:.1%}")
        console.print(table)


def memory_table(result: Any) -> None:
    if not result.memory:
        return
    console.print("\n[bold]Memory[/], ONNX Runtime (MiB, in a fresh process per setting: RSS before and after session creation, "
                  "peak during the runs at each batch size)")
    table = _table("model", "arena", "batch", "before", "session", "peak", "GPU", left=2)
    for m in result.memory:
        for b, peak in m.peak_rss_mb.items():
            table.add_row(_name(m.model, False), "on" if m.cpu_mem_arena else "off", str(b),
                          f"{m.rss_before_session_mb:,.0f}", f"+{m.session_mb:,.1f}", f"{peak:,.0f}",
                          "" if m.gpu_mb is None else f"{m.gpu_mb:,.0f}")
    console.print(table)
    methods = {m.peak_method for m in result.memory}
    console.print(f"  peak: {', '.join(sorted(methods))}; {result.memory[0].runs_per_batch} runs per batch size; "
                  "medians over the processes")


def cold_start_table(result: Any) -> None:
    if not result.cold_start:
        return
    console.print("\n[bold]Cold start[/], ONNX Runtime (ms; median over fresh processes) beside the warm figures of this run")
    table = _table("model", "procs", "import", "session", "1st run", "in-run session", "warm p50")
    for c in result.cold_start:
        cases = [x for x in result.cases if x.model == c.model and getattr(x, "runtime", "onnxruntime") == "onnxruntime"]
        warm = next((x for x in cases if x.batch_size == c.first_batch_size), None)
        table.add_row(_name(c.model, False), str(c.processes), f"{c.import_ms:,.0f}", f"{c.session_create_ms:,.1f}",
                      f"{c.first_inference_ms:,.2f}", f"{min(x.session_create_ms for x in cases):,.1f}" if cases else "",
                      "" if warm is None else f"{warm.stats.p50_ms:.4g}")
    console.print(table)
    console.print(f"  cold: import onnxruntime, create the session, first run at batch {result.cold_start[0].first_batch_size}; "
                  "in-run: the fastest session creation of the benchmark's own; warm p50: its steady-state median")


def concurrency_table(result: Any) -> None:
    from cnnkit.bench.concurrency import saturation

    if not result.concurrency:
        return
    console.print("\n[bold]Throughput under load[/], ONNX Runtime (N requests in flight on one session; "
                  "images/s: done over wall time; latency in ms)")
    table = _table("model", "batch", "in flight", "threads", "images/s", "p50", "p99")
    groups: dict[tuple[str, int], list[Any]] = {}
    for p in result.concurrency:
        groups.setdefault((p.model, p.batch_size), []).append(p)
        table.add_row(_name(p.model, False), str(p.batch_size), str(p.streams),
                      f"{p.intra_op_threads or 'default'}{'!' if p.oversubscribed else ''}", rate(p.images_per_s),
                      f"{p.p50_ms:.4g}", f"{p.p99_ms:.4g}")
    console.print(table)
    if any(p.oversubscribed for p in result.concurrency):
        console.print("  threads marked ! oversubscribe the cores (in flight x threads > cores)")
    for (model, b), points in groups.items():
        if len(points) < 2:
            continue
        knee = saturation(points)
        best = max(points, key=lambda p: p.images_per_s)
        what = (f"stops growing after {knee} in flight" if knee is not None
                else f"still grows at {max(p.streams for p in points)} in flight")
        console.print(f"  {Path(model).name} batch {b}: throughput {what} (best {rate(best.images_per_s)} images/s "
                      f"at {best.streams})")


def render_extras(result: Any, wide: bool) -> None:
    profile_tables(result, wide)
    memory_table(result)
    cold_start_table(result)
    concurrency_table(result)
