"""``cnnkit compare BASELINE.json NEW.json``: a noise-aware regression gate for CI. Exit 1 on a regression."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.cli.render import JSON_HELP, check_json_target, console, emit_json, err_console, json_to_stdout


def _fraction(text: str) -> float:
    from cnnkit.errors import CnnkitError

    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise CnnkitError(f"--max-latency-regression: '{text}' is not a number", hint="e.g. 10% or 0.1") from None
    return value  # CompareConfig checks the range


def compare_command(
    baseline: Path = typer.Argument(..., help="The baseline result (cnnkit bench or eval --json)."),
    new: Path = typer.Argument(..., help="The new result of the same kind."),
    max_latency_regression: str = typer.Option("10%", "--max-latency-regression", help="Slowdown allowed, e.g. 10% or 0.1."),
    max_accuracy_drop: float = typer.Option(0.1, "--max-accuracy-drop", help="Accuracy drop allowed, in points."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
) -> None:
    """Per model x provider x batch: the change and a verdict that accounts for noise (bootstrap over the samples)."""
    from cnnkit.cli.render import print_section
    from cnnkit.report.sections import compare_section
    from cnnkit.results.compare import CompareConfig, compare_results

    check_json_target(json_out, force)
    result = compare_results(CompareConfig(baseline, new, _fraction(max_latency_regression), max_accuracy_drop))
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {note}")
    if json_to_stdout(json_out):  # stdout holds the JSON alone
        emit_json(json_out, result.to_dict(), force)
        raise typer.Exit(1 if result.regressed else 0)
    print_section(compare_section(result, compact=True))
    emit_json(json_out, result.to_dict(), force)
    verdicts = [c.verdict for c in (*result.latency, *result.accuracy, *result.scenarios)]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts))
    if result.regressed:
        console.print(f"[bold red]REGRESSION[/] beyond the thresholds ({counts})")
        raise typer.Exit(1)
    console.print(f"[bold green]no regression[/] beyond the thresholds ({counts})")
