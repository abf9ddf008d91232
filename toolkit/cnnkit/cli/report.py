"""``cnnkit report RUN_DIR | RESULT.json ... -o reports/<name>/``: markdown, HTML, plots and CSV from results."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.cli.render import JSON_HELP, check_json_target, console, emit_json, json_to_stdout


def report_command(
    inputs: list[Path] = typer.Argument(..., help="A run folder, or cnnkit JSON results (bench, eval, parity, quantize, train)."),
    output: Path = typer.Option(..., "-o", "--output", help="The report folder, e.g. reports/mnist-cnn/."),
    title: str = typer.Option(None, "--title"),
    force: bool = typer.Option(False, "--force", help="Replace an existing report folder (and the --json file)."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP),
) -> None:
    """Render report.md, a self-contained report.html, the plots (PNG) and results.csv from JSON results."""
    from cnnkit.report.build import write_report

    check_json_target(json_out, force)
    result = write_report(inputs, output, title, force)
    if not json_to_stdout(json_out):
        console.print(f"wrote {result['out_dir']}/: {', '.join(result['files'])} (from {len(result['sources'])} result file(s))")
    emit_json(json_out, result, force)


def render_devices(rows, missing=()) -> None:  # noqa: ANN001 (DeviceRow list, imported lazily)
    """The device comparison: p50/p95 latency and images/s per device, the best device per batch size marked."""
    from rich.table import Table

    from cnnkit.report.devices import best_device_per_batch

    best = best_device_per_batch(rows)
    table = Table(title="devices (* the highest throughput at that batch size)", title_justify="left")
    for col in ("device", "model", "runtime", "batch", "p50 ms", "p95 ms", "images/s"):
        table.add_column(col, justify="left" if col in ("device", "model", "runtime") else "right", no_wrap=True)
    for r in rows:
        star = "*" if best[(r.model, r.runtime, r.precision, r.batch_size)] is r and len(
            {x.device for x in rows}) > 1 else ""
        table.add_row(r.device, r.model, r.label, str(r.batch_size), f"{r.p50_ms:.3f}",
                      f"{r.p95_ms:.3f}" + (" noisy" if r.noisy else ""), f"{r.images_per_s:,.0f}{star}")
    console.print(table)
    for m in missing:
        console.print(f"missing: {m['device']} ({m['node_id'][:12]}): {m['reason']}")
