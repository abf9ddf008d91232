"""``cnnkit summary SPEC|MODEL.keras``: output shape, parameters and receptive field per layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from cnnkit.cli.render import console, print_json, shape_text

if TYPE_CHECKING:
    from cnnkit.summary import ModelSummary


def summary_command(
    target: str = typer.Argument(..., help="A spec preset (mnist-cnn), a spec .toml file, or a .keras model."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Per layer: output shape, parameter count and receptive field (size, stride and share of the input)."""
    if target.endswith(".keras"):
        from cnnkit.build import load_keras_model
        from cnnkit.summary import summarize_keras

        result = summarize_keras(load_keras_model(target))
    else:
        from cnnkit.spec import load_spec
        from cnnkit.summary import summarize_spec

        result = summarize_spec(load_spec(target))
    if as_json:
        print_json(result.to_dict())
    else:
        render_summary(result)


def render_summary(result: ModelSummary) -> None:
    from rich.table import Table

    h, w = result.input_shape[0], result.input_shape[1]
    table = Table(title=f"{result.name}: input {shape_text(result.input_shape)}", title_justify="left")
    for col in ("layer", "output", "params", "receptive field", "stride", "input seen"):
        table.add_column(col, justify="left" if col == "layer" else "right", no_wrap=True)
    for row in result.layers:
        rf = "?" if row.receptive_field is None else shape_text(row.receptive_field)
        if row.receptive_field is not None and row.jump is None:
            rf = "all"
        stride = "" if row.jump is None else shape_text(row.jump)
        share = "?" if row.rf_share is None else f"{row.rf_pixels:,} px {100 * row.rf_share:.1f} %"
        table.add_row(row.name, shape_text(row.output_shape), f"{row.params:,}", rf, stride, share)
    console.print(table)
    console.print(f"total parameters: {result.total_params:,}   (input: {h * w:,} pixels)")
