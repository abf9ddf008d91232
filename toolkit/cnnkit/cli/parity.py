"""``cnnkit parity REFERENCE CANDIDATE.onnx``: is the exported model the same model? Exit 1 when not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cnnkit.cli.options import labels_option, parse_batch_sizes, skip_bad_images_option, with_preprocess_options
from cnnkit.cli.render import (
    DATASET_HELP, JSON_HELP, check_json_target, console, emit_json, err_console, json_to_stdout, notice, print_section,
    status,
)


@with_preprocess_options
def parity_command(
    reference: Path = typer.Argument(..., help="The reference: a .keras model, or an .onnx model (e.g. FP32)."),
    candidate: Path = typer.Argument(..., help="The .onnx model to check against it."),
    dataset: str = typer.Option(None, "--dataset", help=DATASET_HELP + " 'none': random and edge-case inputs only."),
    data_dir: Path = typer.Option(None, "--data-dir", envvar="CNNKIT_DATA_DIR", help="Dataset files, or a folder of JPEG/PNG images (class subfolders: labelled)."),
    labels: Path = labels_option,
    preprocessing: Any = None,  # the shared preprocessing options, parsed (with_preprocess_options)
    skip_bad_images: bool = skip_bad_images_option,
    samples: int = typer.Option(200, "--samples", help="Dataset images to use (an image folder: spread over its classes), plus 28 random and edge-case inputs."),
    batch_sizes: str = typer.Option("1,7,64", "--batch-sizes", help="Comma-separated; keep an odd one."),
    atol: float = typer.Option(None, "--atol", help="Absolute tolerance. Default: 1e-5 for Keras vs ONNX; not gated for ONNX vs ONNX."),
    rtol: float = typer.Option(None, "--rtol", help="Relative tolerance. Default: 1e-4 for Keras vs ONNX; 0 for ONNX vs ONNX."),
    min_agreement: float = typer.Option(None, "--min-agreement", help="Top-1 agreement needed. Default: 1.0 Keras vs ONNX, 0.99 ONNX vs ONNX."),
    max_accuracy_drop: float = typer.Option(None, "--max-accuracy-drop", help="Accuracy drop allowed, in points. Default: 0.5 for ONNX vs ONNX."),
    provider: str = typer.Option("cpu", "--provider", help="cpu, cuda, tensorrt, or any provider this onnxruntime lists."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="Run on the CPU if the provider does not load, and say so."),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="What runs the candidate: onnxruntime, openvino, openvino:bf16, "
                                "or litert (the .tflite beside it, or --tflite)."),
    tflite: Path = typer.Option(None, "--tflite", help="LiteRT's .tflite. Default: beside the candidate .onnx."),
    layers: bool = typer.Option(False, "--layers", help="Show the per-layer table even on a pass."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random inputs."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP + " Every figure, tolerances, inputs, provider, versions."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
) -> None:
    """Run both models on the same inputs at several batch sizes and compare every output."""
    from cnnkit.parity.check import ParityConfig, check_parity
    from cnnkit.runtimes.registry import parse_one_runtime
    from cnnkit.runtimes.sessions import SessionConfig

    check_json_target(json_out, force)
    config = ParityConfig(
        reference=reference, candidate=candidate, dataset=dataset, data_dir=data_dir, samples=samples,
        batch_sizes=parse_batch_sizes(batch_sizes), atol=atol, rtol=rtol, min_agreement=min_agreement,
        max_accuracy_drop=max_accuracy_drop, session=SessionConfig(provider=provider, allow_fallback=allow_fallback),
        seed=seed, layers=layers, runtime=parse_one_runtime(runtime, "parity"), tflite=tflite,
        preprocess=preprocessing,
        skip_bad_images=skip_bad_images, labels_file=labels,
    )
    from cnnkit.errors import ModelFileError
    from cnnkit.filekind import KERAS, ONNX, require_file, sniff

    for path in (reference, candidate):
        require_file(path)
    if sniff(candidate) == KERAS:
        swapped = f"cnnkit parity {candidate} {reference}" if sniff(reference) == ONNX else f"cnnkit parity {candidate} MODEL.onnx"
        raise ModelFileError(f"the candidate {candidate} is {KERAS}; the candidate must be an ONNX model",
                             hint=f"the reference comes first: {swapped}")
    result = check_parity(config, progress=status)
    if result.inputs.get("preprocess_note"):
        notice(result.inputs["preprocess_note"])
    data_note = (result.inputs.get("dataset") or {}).get("notice")
    if data_note:
        notice(data_note)
    if not json_to_stdout(json_out):
        render_parity(result)
    emit_json(json_out, result.to_dict(), force)
    if not result.passed:
        raise typer.Exit(1)


def render_parity(result) -> None:  # noqa: ANN001 (ParityResult; imported lazily)
    from cnnkit.report.sections import gate_text, parity_section

    tol = result.tolerance
    prov = result.provider
    fallback = f" FALLBACK from {prov['requested']}: {prov['fallback_reason']}" if prov.get("fallback") else ""
    precision = f" ({prov['precision']})" if prov.get("precision") else ""
    console.print(f"{result.mode}: {result.reference} vs {result.candidate}, on {prov['active']}{precision}{fallback}")
    counts = ", ".join(f"{n} {k}" for k, n in result.inputs["counts"].items())
    labelled = "" if result.inputs["dataset"].get("labelled", True) else ", its labels unused: not the model's dataset"
    console.print(f"inputs: {counts} (dataset {result.inputs['dataset'].get('name')}{labelled}, seed {result.inputs['seed']})")
    if result.inputs.get("preprocess"):
        from cnnkit.data.preprocess import PreprocessRecord

        console.print(f"preprocessing: {PreprocessRecord.from_dict(result.inputs['preprocess']).describe()}")
    if result.inputs.get("batch_note"):
        console.print(f"note: {result.inputs['batch_note']}")
    if result.inputs.get("output_spread") is not None:
        console.print(f"reference outputs vary across inputs by up to {result.inputs['output_spread']:.3g}")
    stable = next((d.reference_top1_stability for d in result.outputs if d.reference_top1_stability is not None), None)
    if stable is not None:
        from cnnkit.parity.stability import DITHER_GREY_LEVELS

        console.print(f"reference top-1 stability: {stable:.4f} of the inputs keep their top-1 when pixels move by up to "
                      f"{DITHER_GREY_LEVELS:g} grey level")
    console.print(f"gate: {gate_text(tol)} — {tol.reason}")
    print_section(parity_section(result, compact=True))
    if result.passed:
        console.print("[bold green]PARITY PASS[/]")
        return
    for failure in result.failures:
        err_console.print(f"[red]fail:[/] {failure}")
    if result.divergence:
        err_console.print(f"[red]first divergent layer:[/] {result.divergence}")
    console.print(f"[bold red]PARITY FAIL[/] ({len(result.failures)} failure(s))")
