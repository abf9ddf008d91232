"""``cnnkit verify model.cnnkit``: does this device compute what was validated? Exit 1 when not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cnnkit.cli.options import address_option, engine_option, parse_batch_sizes, with_preprocess_options
from cnnkit.cli.render import JSON_HELP, check_json_target, console, emit_json, err_console, json_to_stdout, print_section


@with_preprocess_options
def verify_command(
    bundle: Path = typer.Argument(..., help="The bundle (cnnkit bundle ... -o model.cnnkit)."),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="What runs the model: onnxruntime, openvino, "
                                "openvino:bf16 or litert (the bundle's .tflite, or --model X.tflite)."),
    provider: str = typer.Option("cpu", "--provider", help="cpu, cuda, tensorrt, or any provider this onnxruntime lists."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="Run on the CPU if the provider does not load, and say so."),
    model: Path = typer.Option(None, "--model", help="Check another artifact against the same golden outputs: an "
                               ".onnx (INT8 or FP16: the variant gate) or a .tflite. Default: the bundled model."),
    preprocessing: Any = None,
    batch_sizes: str = typer.Option(None, "--batch-sizes", help="Default: the bundle's (1,7,64)."),
    atol: float = typer.Option(None, "--atol", help="Override the bundle's absolute tolerance."),
    rtol: float = typer.Option(None, "--rtol", help="Override the bundle's relative tolerance."),
    min_agreement: float = typer.Option(None, "--min-agreement", help="Override the top-1 agreement needed."),
    max_accuracy_drop: float = typer.Option(None, "--max-accuracy-drop", help="Override a variant's accuracy drop allowed, in points."),
    engine: str = engine_option,
    nodes: str = typer.Option("all", "--nodes", help="With --engine ray: all, or LABEL=VALUE (e.g. device=jetson)."),
    address: str = address_option,
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP + " Every figure, the gate, this device's fingerprint."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
) -> None:
    """Run a bundle's golden inputs on this device and compare with its golden outputs (exit 1 on a mismatch)."""
    from cnnkit.runtimes.registry import parse_one_runtime
    from cnnkit.runtimes.sessions import SessionConfig
    from cnnkit.verify.check import VerifyConfig, verify_bundle

    check_json_target(json_out, force)
    config = VerifyConfig(bundle=bundle, runtime=parse_one_runtime(runtime, "verify"),
                          session=SessionConfig(provider=provider, allow_fallback=allow_fallback), model=model,
                          preprocess=preprocessing, batch_sizes=parse_batch_sizes(batch_sizes) if batch_sizes else None,
                          atol=atol, rtol=rtol, min_agreement=min_agreement, max_accuracy_drop=max_accuracy_drop)
    from cnnkit.choices import check_engine

    if check_engine(engine) == "ray":
        from cnnkit.distributed.fleet_verify import verify_fleet

        with err_console.status(f"verify: {bundle.name} on every node of the cluster"):
            fleet = verify_fleet(config, nodes=nodes, address=address)
        if not json_to_stdout(json_out):
            render_fleet(fleet)
        emit_json(json_out, fleet.to_dict(), force)
        if not fleet.passed:
            raise typer.Exit(1)
        return
    with err_console.status(f"verify: running {bundle.name}'s golden inputs on {config.runtime.label}"):
        result = verify_bundle(config)
    if not json_to_stdout(json_out):
        render_verify(result)
    emit_json(json_out, result.to_dict(), force)
    if not result.passed:
        raise typer.Exit(1)


def render_verify(result) -> None:  # noqa: ANN001 (VerifyResult; imported lazily)
    from cnnkit.report.sections import gate_text, verify_section

    b, m, prov = result.bundle, result.model, result.provider
    made = b["made_on"]
    precision = f" ({prov['precision']})" if prov.get("precision") else ""
    fallback = f" FALLBACK from {prov['requested']}: {prov['fallback_reason']}" if prov.get("fallback") else ""
    console.print(f"verify: {m['path']} ({m['precision']}{', the bundled model' if m['same_as_bundle'] else ''}) "
                  f"on {result.runtime['label']}, {prov.get('active')}{precision}{fallback}")
    console.print(f"bundle: {b['path']} (sha256 {b['sha256'][:16]}…), made {b['created']} on {made.get('cpu')}, "
                  f"onnxruntime {made.get('onnxruntime')}; reference {b['reference']['name']} ({b['reference']['runs_on']})")
    counts = ", ".join(f"{n} {k}" for k, n in result.inputs["counts"].items())
    console.print(f"golden inputs: {counts}; batch sizes {', '.join(map(str, result.batch_sizes))}")
    stable = next((d.reference_top1_stability for d in result.outputs if d.reference_top1_stability is not None), None)
    if stable is not None:
        console.print(f"reference top-1 stability: {stable:.4f}")
    console.print(f"gate ({result.gate_kind}): {gate_text(result.tolerance)} — {result.tolerance.reason}")
    print_section(verify_section(result, compact=True))
    if result.passed:
        console.print("[bold green]VERIFY PASS[/]")
        return
    for failure in result.failures:
        err_console.print(f"[red]fail:[/] {failure}")
    for line in result.diagnosis:
        err_console.print(f"[red]diverged:[/] {line}")
    console.print(f"[bold red]VERIFY FAIL[/] ({len(result.failures)} failure(s))")


def render_fleet(fleet) -> None:  # noqa: ANN001 (FleetVerifyResult; imported lazily)
    from rich.table import Table

    table = Table(title=f"verify on {len(fleet.rows)} node(s)", title_justify="left")
    for col in ("device", "host", "runtime", "max |diff|", "top-1", "verdict"):
        table.add_column(col, justify="right" if col in ("max |diff|", "top-1") else "left", overflow="fold")
    from cnnkit.finite import number

    for row in fleet.rows:
        r = row.result
        if r is None:
            table.add_row(row.device, row.hostname, "-", "", "", f"[red]ERROR[/] {row.error}")
            continue
        worst = max((d.max_abs for d in r.outputs if d.max_abs is not None), default=None)
        agree = min((d.top1_agreement for d in r.outputs), default=0.0)
        table.add_row(row.device, row.hostname, f"{r.runtime['label']} {r.provider.get('active', '')}", number(worst),
                      f"{agree:.4f}", "[green]pass[/]" if r.passed else "[red]FAIL[/]")
    console.print(table)
    for row in fleet.rows:
        if row.result is not None and not row.result.passed:
            for failure in row.result.failures:
                err_console.print(f"[red]fail ({row.device}):[/] {failure}")
    console.print("[bold green]VERIFY PASS on every node[/]" if fleet.passed else "[bold red]VERIFY FAIL[/]")
