"""``cnnkit quantize MODEL.onnx -o OUT.onnx``: INT8 or FP16, checked against FP32 before it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cnnkit.choices import ActivationType, CalibrationMethod, QuantFormat, QuantMode
from cnnkit.cli.options import address_option, engine_option, labels_option, skip_bad_images_option, with_preprocess_options
from cnnkit.cli.render import (
    JSON_HELP, check_json_target, console, emit_json, err_console, json_to_stdout, number, print_section,
)


@with_preprocess_options
def quantize_command(
    model: Path = typer.Argument(..., help="The FP32 .onnx model."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the variant."),
    mode: QuantMode = typer.Option(QuantMode.STATIC, "--mode"),
    format: QuantFormat = typer.Option(QuantFormat.QDQ, "--format", help="Static INT8 graph format."),
    activation_type: ActivationType = typer.Option(ActivationType.UINT8, "--activation-type"),
    calibration_method: CalibrationMethod = typer.Option(CalibrationMethod.MINMAX, "--calibration-method"),
    per_channel: bool = typer.Option(False, "--per-channel", help="Per-channel weight scales."),
    calibration_samples: int = typer.Option(256, "--calibration-samples", help="Images to calibrate on (training split, or a seeded sample of an image folder)."),
    dataset: str = typer.Option(None, "--dataset", help="Default: the dataset the model's metadata names (another one is an error)."),
    data_dir: Path = typer.Option(None, "--data-dir", envvar="CNNKIT_DATA_DIR", help="Dataset files, or a folder of the model's JPEG/PNG images (class subfolders: accuracy is checked; unlabelled: agreement with FP32)."),
    labels: Path = labels_option,
    skip_bad_images: bool = skip_bad_images_option,
    max_accuracy_drop: float = typer.Option(0.1, "--max-accuracy-drop", help="Accuracy budget in percentage points on the test split."),
    max_attempts: int = typer.Option(8, "--max-attempts", help="Rebuilds, each trying the next fix: per-channel weights, another calibration, 16-bit activations, worst nodes in float."),
    exclude_node: list[str] = typer.Option(None, "--exclude-node", metavar="NAME", help="A node to keep in float from the start (repeat the option for more)."),
    explain: bool = typer.Option(False, "--explain", help="Per blamed node: weight SQNR per tensor and per channel, activation SQNR, and the fix applied or suggested."),
    max_time: float = typer.Option(300.0, "--max-time", help="Seconds the loop (or --auto) may take; then the best so far, or a refusal saying where it stopped."),
    eval_samples: int = typer.Option(None, "--eval-samples", help="Evaluate on N test images (the first N; of an image folder, N spread over its classes; default: all)."),
    auto: bool = typer.Option(False, "--auto", help="Build, evaluate and benchmark every candidate; save the fastest within budget."),
    batch_size: int = typer.Option(64, "--batch-size", help="With --auto: the large batch size to choose by (batch 1 is measured too)."),
    provider: str = typer.Option("cpu", "--provider"),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    preprocessing: Any = None,  # the shared preprocessing options, parsed (with_preprocess_options)
    keep_failed: bool = typer.Option(False, "--keep-failed",
                                     help="Write a variant that fails its gate anyway, marked failed in its metadata (exit 1 still)."),
    engine: str = engine_option,
    address: str = address_option,
) -> None:
    """Quantize an FP32 model: dynamic or static INT8 (QDQ or QOperator), or FP16 with float32 I/O."""
    from cnnkit.errors import CnnkitError
    from cnnkit.quantize.auto import auto_quantize
    from cnnkit.quantize.config import QuantizeConfig
    from cnnkit.quantize.loop import quantize_model
    from cnnkit.runtimes.sessions import SessionConfig

    if batch_size <= 0:
        raise CnnkitError(f"--batch-size must be positive, got {batch_size}", hint="e.g. --batch-size 64 (the default)")
    check_json_target(json_out, force)
    if explain and auto:
        raise CnnkitError("--explain explains the nodes of one quantize run, not --auto's candidates",
                          hint="drop --auto and give the --mode to explain, or drop --explain")
    config = QuantizeConfig(
        model=model, output=output, mode=mode, format=format, activation_type=activation_type,
        calibration_method=calibration_method, per_channel=per_channel, calibration_samples=calibration_samples,
        dataset=dataset, data_dir=data_dir, max_accuracy_drop=max_accuracy_drop, max_attempts=max_attempts,
        eval_samples=eval_samples, session=SessionConfig(provider=provider), force=force, preprocess=preprocessing,
        skip_bad_images=skip_bad_images, labels_file=labels, keep_failed=keep_failed, engine=engine, address=address,
        max_time_s=max_time, explain=explain, exclude_nodes=tuple(exclude_node or ()),
    )

    def say(message: str) -> None:
        if message.startswith("note: "):  # a data switch, for instance: it must be seen
            err_console.print(f"[yellow]note:[/] {message[6:]}")
        elif message.startswith("explain: "):  # asked for: said plainly, even when the gate then refuses
            err_console.print(message[9:], highlight=False)
        else:
            err_console.print(f"[dim]{message}[/]")

    if auto:
        result = auto_quantize(config, batch_sizes=(1, batch_size), progress=say)
        if not json_to_stdout(json_out):
            render_auto(result)
    else:
        result = quantize_model(config, progress=say)
        if not json_to_stdout(json_out):
            render_quantize(result)
    emit_json(json_out, result.to_dict(), force)
    if not getattr(result, "passed", True):
        for failure in result.failures:
            err_console.print(f"[red]fail:[/] {failure}")
        err_console.print(f"[bold red]GATE FAIL[/]: {result.output} was written only because of --keep-failed "
                          "(its metadata says cnnkit_gate=failed)")
        raise typer.Exit(1)


def render_quantize(r) -> None:  # noqa: ANN001 (QuantizeResult)
    from cnnkit.quantize.config import metric_name, size_change

    marked = " [red](FAILED its gate, kept by --keep-failed)[/]" if not r.passed else ""
    console.print(f"wrote {r.output}{marked}: {', '.join(f'{k}={v}' for k, v in r.settings.items())}")
    if r.accuracy is None:
        console.print(f"accuracy not checked: {r.dataset.get('metric')}")
    else:
        images = {True: f"held-out {r.dataset['name']} images", None: f"{r.dataset['name']} images",
                  False: f"{r.dataset['name']} images (calibration images: none held out)"}[r.dataset.get("held_out")]
        n = r.dataset["evaluated_samples"]
        if metric_name(r.dataset) == "accuracy":
            console.print(f"accuracy {100 * r.accuracy:.2f} % vs FP32 {100 * r.fp32_accuracy:.2f} % "
                          f"({r.accuracy_change_pp:+.2f} pp, drop budget {r.budget_pp:g} pp) on {n:,} "
                          f"{images}; top-1 agreement {100 * r.top1_agreement:.2f} %")
        else:  # no labels: the figure is agreement with FP32 (FP32's own is 100 % by definition)
            console.print(f"top-1 agreement with FP32 {100 * r.accuracy:.2f} % ({r.accuracy_change_pp:+.2f} pp, drop budget "
                          f"{r.budget_pp:g} pp) on {n:,} unlabelled {images}: no labels, accuracy not measured")
    if r.dataset.get("calibration"):
        console.print(f"calibrated on {r.dataset['calibration']}")
    if r.dataset.get("preprocess"):
        from cnnkit.data.preprocess import PreprocessRecord

        console.print(f"preprocessing: {PreprocessRecord.from_dict(r.dataset['preprocess']).describe()}")
    console.print(f"size {r.size_bytes:,} bytes vs FP32 {r.fp32_size_bytes:,} ({size_change(r.size_ratio)})")
    p = r.parity
    console.print(f"parity vs FP32 (ONNX vs ONNX): max |diff| {number(p['max_abs'])}, mean {number(p['mean_abs'])}, "
                  f"top-1 agreement {p['top1_agreement']:.4f}: {'pass' if p['passed'] else 'FAIL'}")
    if p.get("ungated_top1_agreement") is not None:
        console.print(f"  not gated: top-1 agreement {p['ungated_top1_agreement']:.4f} on {p['ungated_inputs']} random and "
                      f"edge-case inputs (outside the calibration images: they clip)")
    if p.get("reference_top1_stability") is not None:
        console.print(f"FP32's own top-1 stability (pixels moved by up to ½ grey level): {p['reference_top1_stability']:.4f}")
    if len(r.attempts) > 1:
        console.print("steps (each on the held-out images, the same gate):")
        for i, a in enumerate(r.attempts, 1):
            effect = ("" if a.drop_pp is None else f"drop {a.drop_pp:+.2f} pp, agreement {100 * a.top1_agreement:.2f} %, "
                      f"{len(a.excluded_nodes)} in float")
            if a.infer_ms_per_image is not None:
                effect += f", {a.infer_ms_per_image:.3f} ms/image"
            if a.error:
                effect = f"could not be built ({a.error})"
            console.print(f"  {i}. {a.step or 'build'}: {effect}" + ("" if a.kept or a.error else " [dim](undone: no closer)[/]"))
    if r.recipe.get("per_channel_weights"):
        console.print(f"per-channel weights: {', '.join(r.recipe['per_channel_weights'])}")
    if r.recipe.get("activations_16bit"):
        console.print(f"16-bit activations: {', '.join(r.recipe['activations_16bit'])}")
    if r.excluded_nodes:
        console.print(f"kept in float to meet the budget: {', '.join(r.excluded_nodes)}")
    if r.stopped:
        err_console.print(f"[yellow]note:[/] {r.stopped}")
    if r.speed:
        console.print("speed vs FP32 (p50, measured): " + ", ".join(
            f"batch {b}: {r.speed['variant_p50_ms'][b]:.3f} vs {r.speed['fp32_p50_ms'][b]:.3f} ms" for b in r.speed["ratio"]))
    if r.speed_warning:
        err_console.print(f"[yellow]warning:[/] {r.speed_warning}")
    s = r.slowdown
    if s:
        v = s["variant"]
        console.print(f"as ONNX Runtime runs it: {v['nodes']} nodes (written: {s['variant_nodes']}; FP32 runs "
                      f"{s['fp32_nodes']}), {v['integer_kernels']} integer kernels, {v['quantize']} Quantize and "
                      f"{v['dequantize']} DequantizeLinear ({v['boundary']} at the float interface); CPU integer "
                      f"instructions: {s['cpu_integer'] or 'n/a'}")
        if r.speed_warning:
            for cause in s["causes"]:
                err_console.print(f"  why: {cause}")
            for help_ in s["helps"]:
                err_console.print(f"  what would help: {help_}")


def render_auto(r) -> None:  # noqa: ANN001 (AutoResult)
    from cnnkit.report.sections import auto_section

    print_section(auto_section(r, compact=True))
    console.print(f"[bold]{r.summary}[/]; wrote {r.output}")
