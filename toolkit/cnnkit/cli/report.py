"""``cnnkit report RUN_DIR | RESULT.json ... -o reports/<name>/``: markdown, HTML, plots and CSV from results."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.cli.render import console


def report_command(
    inputs: list[Path] = typer.Argument(..., help="A run folder, or cnnkit JSON results (bench, eval, parity, quantize, train)."),
    output: Path = typer.Option(..., "-o", "--output", help="The report folder, e.g. reports/mnist-cnn/."),
    title: str = typer.Option(None, "--title"),
    force: bool = typer.Option(False, "--force", help="Replace an existing report folder."),
) -> None:
    """Render report.md, a self-contained report.html, the plots (PNG) and results.csv from JSON results."""
    from cnnkit.report import write_report

    result = write_report(inputs, output, title, force)
    console.print(f"wrote {result['out_dir']}/: {', '.join(result['files'])} (from {len(result['sources'])} result file(s))")
