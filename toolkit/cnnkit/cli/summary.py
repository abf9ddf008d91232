"""``cnnkit summary SPEC|MODEL.keras``: output shape, parameters and receptive field per layer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cnnkit.cli.render import (
    JSON_HELP, check_json_target, console, emit_json, figure_column, json_to_stdout, new_table, print_table, shape_text,
    status, text_column,
)

if TYPE_CHECKING:
    from cnnkit.graph.summary import OnnxSummary
    from cnnkit.keras.summary import ModelSummary


def summary_command(
    target: str = typer.Argument(..., help="A spec preset (mnist-cnn), a spec .toml file, a .keras or an .onnx model."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
) -> None:
    """Per layer: output shape, parameter count and receptive field (size, stride and share of the input);
    for an .onnx model: inputs and outputs with layout and dtype, opset, producer, parameters and MACs per layer,
    and an operator histogram."""
    from cnnkit.filekind import ONNX, sniff

    check_json_target(json_out, force)
    if target.lower().endswith(".onnx") or sniff(target) == ONNX:
        from cnnkit.graph.summary import summarize_onnx

        onnx_result = summarize_onnx(target)
        if not json_to_stdout(json_out):
            render_onnx_summary(onnx_result)
        emit_json(json_out, onnx_result.to_dict(), force)
        return
    if target.endswith(".keras"):
        from cnnkit.keras.build import load_keras_model
        from cnnkit.keras.summary import summarize_keras

        result = summarize_keras(load_keras_model(target, progress=status))
    else:
        from cnnkit.errors import SpecError
        from cnnkit.keras.spec import list_presets, load_spec
        from cnnkit.keras.summary import summarize_spec

        try:
            spec = load_spec(target)
        except SpecError as exc:
            if exc.message.startswith(("unknown spec", "spec file")):
                raise
            raise SpecError(exc.message, hint=f"summary takes a spec preset ({', '.join(list_presets())}), a spec .toml, "
                                              "a .keras or an .onnx model") from None
        result = summarize_spec(spec)
    if not json_to_stdout(json_out):
        render_summary(result)
    emit_json(json_out, result.to_dict(), force)


def render_summary(result: ModelSummary) -> None:
    h, w = result.input_shape[0], result.input_shape[1]
    table = new_table(f"{result.name}: input {shape_text(result.input_shape)}")
    text_column(table, "layer")
    for col in ("output", "params", "receptive\nfield", "stride", "input seen"):
        figure_column(table, col)
    for row in result.layers:
        rf = "?" if row.receptive_field is None else shape_text(row.receptive_field)
        if row.receptive_field is not None and row.jump is None:
            rf = "all"
        stride = "" if row.jump is None else shape_text(row.jump)
        share = "?" if row.rf_share is None else f"{row.rf_pixels:,} px {100 * row.rf_share:.1f} %"
        table.add_row(row.name, shape_text(row.output_shape), f"{row.params:,}", rf, stride, share)
    print_table(table)
    console.print(f"total parameters: {result.total_params:,}   (input: {h * w:,} pixels)")


def _count(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def render_onnx_summary(result: OnnxSummary) -> None:
    from cnnkit.graph.summary import MAC_OPS

    console.print(f"{result.model}: {result.size_bytes:,} bytes, IR {result.ir_version}, opset {result.opset}, "
                  f"producer {result.producer}, precision {result.precision}")
    for kind, tensors in (("input", result.inputs), ("output", result.outputs)):
        for t in tensors:
            layout = f", {t.layout}" if t.layout else ""
            console.print(f"{kind:6} {t.name}: {t.dtype} {shape_text(t.shape) or 'scalar'}{layout}")
    img = result.image_input
    if img is not None:
        batch = f"fixed batch {img['batch']}" if img["batch"] is not None else "dynamic batch"
        console.print(f"image: {img['height']}×{img['width']}×{img['channels']} (H×W×C), {batch}, {img['pixel_encoding']}")
    else:
        console.print(f"[yellow]not an image model for cnnkit:[/] {result.image_error}")
    table = new_table()
    batch = img["batch"] if img is not None and img["batch"] is not None else 1
    text_column(table, "layer")
    text_column(table, "op")
    for col in (f"output\n(batch {batch})", "params", "MACs per\nimage", "share"):
        figure_column(table, col)
    for layer in result.layers:
        share = "" if not layer.macs or not result.total_macs else f"{100 * layer.macs / result.total_macs:.1f} %"
        table.add_row(layer.name, layer.op, shape_text(layer.output_shape) if layer.output_shape else "?",
                      f"{layer.params:,}", _count(layer.macs) if layer.op in MAC_OPS else "-", share)
    print_table(table)
    if result.unknown_macs and not result.total_macs:
        macs = f"MACs unknown ({result.unknown_macs} layer(s) with unknown shapes)"
    else:
        unknown = f", {result.unknown_macs} layer(s) with unknown shapes not counted" if result.unknown_macs else ""
        macs = (f"{'at least ' if unknown else ''}{_count(result.total_macs)} MACs per image "
                f"({result.total_macs:,}{unknown})")
    console.print(f"total: {result.total_params:,} parameters, {macs}; {result.nodes:,} nodes")
    if result.shapes_folded:
        # ONNX shape inference alone stopped inside a shape computed at run time (e.g. TF "same" padding).
        console.print(f"shapes: inferred after constant-folding {result.shapes_folded} shape-computing node(s)")
    console.print("ops: " + ", ".join(f"{op} {n}" for op, n in result.op_histogram.items()))
