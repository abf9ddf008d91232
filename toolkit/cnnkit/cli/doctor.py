"""``cnnkit doctor``: installed packages, providers listed vs providers that load, GPU, CPU."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.cli.render import JSON_HELP, check_json_target, console, emit_json, json_to_stdout


def doctor_command(
    provider: str = typer.Option(None, "--provider", help="Exit 1 unless this provider really runs a session here."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
) -> None:
    """What is installed and what actually works: ONNX Runtime and its providers, CUDA libraries, GPU, CPU."""
    from cnnkit.runtimes.doctor import check_provider, run_doctor
    from cnnkit.errors import CnnkitError

    check_json_target(json_out, force)
    report = run_doctor()
    checked = check_provider(report, provider) if provider else None
    if not json_to_stdout(json_out):
        render_doctor(report)
    emit_json(json_out, report.to_dict() | ({"checked": {"provider": checked[0], "usable": checked[1]}} if checked else {}), force)
    if checked and not checked[1]:
        reason = next((p.reason for p in report.providers + report.plugin_providers if p.name == checked[0]), "not listed")
        raise CnnkitError(f"{checked[0]} is not usable here: {reason}")


def render_doctor(report) -> None:  # noqa: ANN001 (DoctorReport, imported lazily)
    pk = report.packages
    console.print(f"python {report.python}; cnnkit {pk['cnnkit']}; numpy {pk.get('numpy')}; onnx {pk.get('onnx')}")
    console.print(f"onnxruntime: {pk.get('onnxruntime') or '-'}   onnxruntime-gpu: {pk.get('onnxruntime-gpu') or '-'}")
    tf = pk.get("tensorflow")
    console.print(f"training stack: tensorflow {tf or 'not installed'}, keras {pk.get('keras') or '-'}, tf2onnx {pk.get('tf2onnx') or '-'}")
    for problem in report.problems:
        console.print(f"[bold red]problem:[/] {problem}")
    console.print("execution providers (listed by the wheel -> whether a session really runs on it):")
    for p in report.providers:
        mark = "[green]loads[/]" if p.loads else f"[red]does not load[/]: {p.reason}"
        console.print(f"  {p.name}: {mark}")
    if report.plugins:
        console.print("plugin execution providers (onnxruntime-ep-* packages -> the devices each exposes here):")
        for plugin in report.plugins:
            runs = [p for p in report.plugin_providers if p.name in plugin.ep_names]
            if plugin.error:
                what = f"[red]does not register[/]: {plugin.error}"
            elif plugin.devices:
                what = "devices: " + "; ".join(d.describe() for d in plugin.devices) + "".join(
                    f"; {p.name} [green]runs a session[/]" if p.loads else f"; {p.name} [red]does not run[/]: {p.reason}"
                    for p in runs)
            else:
                what = f"[yellow]exposes no device on this machine ({report.cpu['model']})[/]"
            console.print(f"  {plugin.distribution} {plugin.version} ({', '.join(plugin.ep_names) or '?'}): {what}")
    else:
        console.print("plugin execution providers: none installed (onnxruntime-ep-* packages)")
    from cnnkit.runtimes.base import INSTALL

    console.print("runtimes (cnnkit bench/eval --runtime): " + ", ".join(
        f"{name} {version}" if version else f"{name} not installed ({INSTALL[name]})"
        for name, version in report.runtimes.items()))
    libs = {k: v for k, v in report.gpu_libraries.items() if v}
    missing = [k for k, v in report.gpu_libraries.items() if not v]
    console.print("CUDA/cuDNN/TensorRT libraries: " + (", ".join(f"{k} ({v[0]})" for k, v in libs.items()) or "none found")
                  + (f"; not found: {', '.join(missing)}" if missing else ""))
    if report.gpus:
        for g in report.gpus:
            console.print(f"GPU: {g['name']}, {g['memory']}, driver {g['driver']}")
    else:
        console.print("GPU: none found (no nvidia-smi)")
    cpu = report.cpu
    console.print(f"CPU: {cpu['model']}, {cpu['logical_cores']} logical cores ({cpu['usable_cores']} usable); "
                  f"ISA: {', '.join(cpu['isa']) or 'unknown'}")
