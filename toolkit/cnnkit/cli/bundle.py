"""``cnnkit bundle MODEL.onnx -o model.cnnkit``: the model, golden inputs and outputs, gates and hashes in one file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cnnkit.cli.options import labels_option, parse_batch_sizes, with_preprocess_options
from cnnkit.cli.render import DATASET_HELP, JSON_HELP, check_json_target, console, emit_json, err_console, json_to_stdout, notice


@with_preprocess_options
def bundle_command(
    model: Path = typer.Argument(..., help="The .onnx model as deployed (a .tflite beside it is bundled too)."),
    output: Path = typer.Option(..., "-o", "--output", help="The bundle to write, e.g. model.cnnkit."),
    reference: Path = typer.Option(None, "--reference", help="Where the golden outputs come from: the .keras model or "
                                   "an FP32 .onnx (run on the CPU). Default: the model itself, on the CPU."),
    tflite: Path = typer.Option(None, "--tflite", help="LiteRT's .tflite to bundle. Default: the one beside MODEL, if any."),
    dataset: str = typer.Option(None, "--dataset", help=DATASET_HELP + " 'none': random and edge-case inputs only."),
    data_dir: Path = typer.Option(None, "--data-dir", envvar="CNNKIT_DATA_DIR",
                                  help="Dataset files, or a folder of JPEG/PNG images (class subfolders: labelled)."),
    labels: Path = labels_option,
    preprocessing: Any = None,
    samples: int = typer.Option(64, "--samples", help="Dataset images to bundle, plus 28 random and edge-case inputs."),
    seed: int = typer.Option(0, "--seed", help="Seed for the choice of images and the random inputs."),
    batch_sizes: str = typer.Option("1,7,64", "--batch-sizes", help="The batch sizes verify runs; keep an odd one."),
    atol: float = typer.Option(None, "--atol", help="The same-model gate's absolute tolerance. Default: parity's "
                               "(1e-5, widened to 4x the model's own float32 rounding)."),
    rtol: float = typer.Option(None, "--rtol", help="Its relative tolerance. Default: 1e-4."),
    min_agreement: float = typer.Option(None, "--min-agreement", help="Top-1 agreement needed. Default: 1.0 for the "
                                        "model, 0.99 for a variant."),
    max_accuracy_drop: float = typer.Option(None, "--max-accuracy-drop", help="A variant's accuracy drop allowed, in "
                                            "points. Default: 0.5."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP + " The manifest, the bundle's size and hash."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing bundle (and --json file)."),
) -> None:
    """Bundle a model with golden inputs and its reference's outputs, for cnnkit verify on a device."""
    from cnnkit.verify.bundle import BundleConfig, build_bundle

    check_json_target(json_out, force)
    config = BundleConfig(model=model, output=output, reference=reference, tflite=tflite, dataset=dataset,
                          data_dir=data_dir, labels_file=labels, samples=samples, seed=seed,
                          preprocess=preprocessing, batch_sizes=parse_batch_sizes(batch_sizes), atol=atol, rtol=rtol,
                          min_agreement=min_agreement, max_accuracy_drop=max_accuracy_drop, force=force)
    with err_console.status(f"bundle: running {reference or model} and {model.name} on the golden inputs"):
        result = build_bundle(config)
    m = result.manifest
    notice_line = (m.inputs.get("dataset") or {}).get("notice")
    if notice_line:
        notice(notice_line)
    if not json_to_stdout(json_out):
        from cnnkit.report.sections import gate_text
        from cnnkit.data.preprocess import PreprocessRecord

        counts = ", ".join(f"{n} {k}" for k, n in m.inputs["counts"].items())
        files = ", ".join(f"{name} {f.bytes / 1e6:.2f} MB" for name, f in m.files.items() if f.bytes >= 100_000)
        console.print(f"wrote {result.path}: {result.bytes / 1e6:.2f} MB (sha256 {result.sha256[:16]}…)")
        console.print(f"model: {m.model['name']} ({m.model['precision']}, sha256 {m.model['sha256'][:16]}…)"
                      + (f" + {m.model['tflite']['name']}" if m.model["tflite"] else ""))
        console.print(f"golden inputs: {counts} (dataset {(m.inputs['dataset'] or {}).get('name')}, seed {m.inputs['seed']}, "
                      f"{m.inputs['labelled']} labelled)")
        console.print(f"preprocessing: {PreprocessRecord.from_dict(m.preprocess).describe()}")
        console.print(f"reference: {m.reference['name']} on {m.reference['runs_on']}")
        console.print(f"gate: {gate_text(m.gate)}; variants: {gate_text(m.variant_gate)}")
        if files:
            console.print(f"largest parts: {files}")
    emit_json(json_out, {"path": result.path, "bytes": result.bytes, "sha256": result.sha256} | {"manifest": m.to_dict()},
              force)
