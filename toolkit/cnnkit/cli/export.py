"""``cnnkit export MODEL.keras -o MODEL.onnx``: convert with tf2onnx, check, and record how."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cnnkit.choices import ExportFormat, InputDtype
from cnnkit.cli.render import JSON_HELP, check_json_target, console, emit_json, json_to_stdout, notice, shape_text, status


def export_command(
    model: Path = typer.Argument(..., help="The Keras 3 .keras model file (an .onnx file with --make-batch-dynamic)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the .onnx (or .tflite) file."),
    fmt: ExportFormat = typer.Option(ExportFormat.ONNX, "--format", case_sensitive=False,
                                     help="onnx, or tflite: a .tflite for LiteRT (--runtime litert)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset."),
    input_dtype: InputDtype = typer.Option(InputDtype.FLOAT32, "--input-dtype", help="uint8: the graph takes raw uint8 pixels and casts inside."),
    input_name: str = typer.Option("images", "--input-name"),
    output_name: str = typer.Option("probabilities", "--output-name"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file (and the --json file)."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Fold the input scale into the first conv and make Flatten's shape static (same outputs, less work per call)."),
    preprocess: str = typer.Option(None, "--preprocess", help="The preprocessing preset recorded in the metadata "
                                   "(raw, unit, tf, torch, caffe). Default: from the spec's value range (raw 0..255)."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP),
    make_batch_dynamic: bool = typer.Option(False, "--make-batch-dynamic",
                                            help="Rewrite a fixed-batch .onnx so it takes any batch, checked by running it at two batch sizes."),
) -> None:
    """Export a Keras model to ONNX (NHWC, dynamic batch), checked by onnx.checker and shape inference."""
    if make_batch_dynamic:
        from cnnkit.export.batch import make_batch_dynamic as rewrite

        check_json_target(json_out, force)
        done = rewrite(model, output, force)
        if json_to_stdout(json_out):
            emit_json(json_out, done.to_dict(), force)
            return
        reshapes = f"; Reshape targets made batch-agnostic: {', '.join(done.reshapes_rewritten)}" if done.reshapes_rewritten else ""
        console.print(f"wrote {done.output}: batch {done.old_batch} -> dynamic{reshapes}; ran at batch "
                      f"{' and '.join(map(str, done.checked_batches))}, outputs equal the original's per image "
                      f"(max |diff| {done.max_abs_diff:.3g})")
        emit_json(json_out, done.to_dict(), force)
        return
    if fmt is ExportFormat.TFLITE:
        if input_dtype is not InputDtype.FLOAT32:
            from cnnkit.errors import CnnkitError

            raise CnnkitError(f"--input-dtype {input_dtype.value} applies to ONNX exports only",
                              hint="a .tflite takes the Keras model's float32 input; drop --input-dtype")
        check_json_target(json_out, force)
        _export_tflite(model, output, force, json_out)
        return
    from cnnkit.export.onnx import ExportConfig, export_onnx

    if preprocess is not None:
        from cnnkit.data.preprocess import preset

        preset(preprocess)  # an unknown name fails before the conversion
    check_json_target(json_out, force)
    result = export_onnx(ExportConfig(model, output, opset, input_dtype, input_name, output_name, force, simplify,
                                      preprocess), progress=status)
    if json_to_stdout(json_out):
        emit_json(json_out, result.to_dict(), force)
        return
    from cnnkit.graph import metadata as meta

    m = result.metadata
    console.print(f"wrote {result.output_path} ({result.size_bytes:,} bytes), opset {result.opset}")
    console.print(f"input  {input_name}: {input_dtype.value} {shape_text(result.input_shape)} (NHWC, raw pixels {m[meta.INPUT_VALUE_RANGE]})")
    if meta.PREPROCESS in m:
        from cnnkit.data.preprocess import PreprocessRecord

        console.print(f"preprocessing record: {PreprocessRecord.from_json(m[meta.PREPROCESS]).describe()}")
    console.print(f"output {output_name}: {shape_text(result.output_shape)}")
    verdict = "equal" if result.params_match else result.params_note
    console.print(f"parameters: Keras {result.keras_params:,}, ONNX {result.onnx_params:,} ({verdict})")
    console.print(f"graph simplification: {result.simplification}")
    check = json.loads(m[meta.CONVERSION_CHECK])
    console.print(f"checks: one input and one output, onnx.checker (full), strict shape inference; ONNX Runtime vs "
                  f"Keras on {check['samples']} random images: max |diff| {check['max_abs_diff']:.3g}")
    for failed in json.loads(m.get(meta.CONVERSION_ROUTES_FAILED, "[]")):
        console.print(f"route not kept: {failed}")
    versions = ", ".join(f"{name} {m[meta.version_key(name)]}" for name in meta.VERSIONED_PACKAGES)
    console.print(f"route: {m[meta.CONVERSION_ROUTE]}; {versions}")
    emit_json(json_out, result.to_dict(), force)


def _export_tflite(model: Path, output: Path, force: bool, json_out: Path | None) -> None:
    from cnnkit.export.tflite import TfliteExportConfig, export_tflite

    result = export_tflite(TfliteExportConfig(model, output, force))
    if json_to_stdout(json_out):
        emit_json(json_out, result.to_dict(), force)
        return
    console.print(f"wrote {result.output_path} ({result.size_bytes:,} bytes), fp32, for LiteRT")
    console.print(f"input  {shape_text(result.input_shape)} (NHWC, raw pixels, as the Keras model); "
                  f"output {shape_text(result.output_shape)}")
    console.print(f"check: LiteRT vs Keras on 16 inputs, max abs diff {result.max_abs_diff:.3g}")
    if not result.outputs_vary:
        notice("Keras gives the same output for every check input (uncalibrated BatchNorm statistics in a random-weight "
               "model?): the check proves little; calibrate or train the model, then export again")
    v = result.versions
    console.print(f"route: {result.route}; tensorflow {v['tensorflow']}, keras {v['keras']}, ai-edge-litert {v['ai_edge_litert']}")
    emit_json(json_out, result.to_dict(), force)
