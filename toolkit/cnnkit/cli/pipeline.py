"""``cnnkit pipeline``: train -> export -> parity -> quantize (auto) -> eval -> bench -> report, resumable."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.cli.options import parse_batch_sizes
from cnnkit.cli.render import JSON_HELP, check_json_target, console, emit_json, json_to_stdout, notice, status


def pipeline_command(
    spec: str = typer.Option("mnist-cnn", "--spec"),
    dataset: str = typer.Option(None, "--dataset", help="Default: MNIST where it can be had, else digits."),
    data_dir: Path = typer.Option(None, "--data-dir", envvar="CNNKIT_DATA_DIR"),
    provider: str = typer.Option("cpu", "--provider"),
    allow_fallback: bool = typer.Option(False, "--allow-fallback"),
    batch_sizes: str = typer.Option("1,8,32,64,128,256", "--batch-sizes"),
    out: Path = typer.Option(None, "--out", help="Run folder. Default: runs/<spec name>/."),
    report_dir: Path = typer.Option(None, "--report-dir", help="Default: reports/<run folder name>/."),
    epochs: int = typer.Option(5, "--epochs"),
    seed: int = typer.Option(0, "--seed"),
    max_accuracy_drop: float = typer.Option(0.1, "--max-accuracy-drop", help="Quantization accuracy budget, points."),
    bench_min_time: float = typer.Option(1.0, "--bench-min-time", help="Seconds of timed runs per shape."),
    force: bool = typer.Option(False, "--force", help="Use a --out or --report-dir that holds other files (they may be replaced)."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP + " pipeline.json in the run folder is kept either way."),
) -> None:
    """The whole job in one command; a re-run reuses finished stages whose inputs did not change."""
    from cnnkit.errors import CnnkitError
    from cnnkit.pipeline import STAGES, PipelineConfig, run_pipeline

    check_json_target(json_out, force)
    if epochs <= 0:
        raise CnnkitError(f"--epochs must be positive, got {epochs}", hint="e.g. --epochs 5 (the default)")
    config = PipelineConfig(spec=spec, dataset=dataset, data_dir=data_dir, provider=provider,
                            batch_sizes=parse_batch_sizes(batch_sizes), out_dir=out, report_dir=report_dir, epochs=epochs,
                            seed=seed, max_accuracy_drop=max_accuracy_drop, bench_min_time_s=bench_min_time,
                            allow_fallback=allow_fallback, force=force)
    total = len(STAGES)

    def on_stage(stage: str, event: str, detail: str) -> None:
        if stage == "data":
            notice(detail)
            return
        n = STAGES.index(stage) + 1
        if event == "progress":
            status(f"[{n}/{total}] {stage}: {detail}")
            return
        if json_to_stdout(json_out):  # stdout is the JSON's alone
            return
        if event == "start":
            console.print(f"[{n}/{total}] {stage} ...")
        elif event == "done":
            console.print(f"[{n}/{total}] {stage} [green]done[/]: {detail}")
        elif event == "reused":
            console.print(f"[{n}/{total}] {stage} [cyan]reused[/] (inputs unchanged): {detail}")
        elif event == "failed":
            console.print(f"[{n}/{total}] {stage} [red]FAILED[/]")

    result = run_pipeline(config, on_stage)
    if not json_to_stdout(json_out):
        console.print(f"run folder {result.out_dir}/; report {result.report_dir}/report.html")
    emit_json(json_out, result.to_dict(), force)
