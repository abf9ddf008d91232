"""``cnnkit predict MODEL.onnx IMAGE...``: the top-k classes of each image, with probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cnnkit.cli.options import labels_option, with_preprocess_options
from cnnkit.cli.render import JSON_HELP, check_json_target, console, emit_json, err_console, json_to_stdout, notice


@with_preprocess_options
def predict_command(
    model: Path = typer.Argument(..., help="The .onnx image classifier."),
    images: list[Path] = typer.Argument(..., help="One or more image files (JPEG, PNG, ...), any size."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many classes to show per image."),
    labels: Path = labels_option,
    preprocessing: Any = None,  # the shared preprocessing options, parsed (with_preprocess_options)
    provider: str = typer.Option("cpu", "--provider"),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
) -> None:
    """Top-k classes with probabilities, through the model's preprocessing record and class names."""
    from cnnkit.evaluate.predict import PredictConfig, predict_images
    from cnnkit.runtimes.sessions import SessionConfig

    check_json_target(json_out, force)
    config = PredictConfig(model, tuple(images), top_k,
                           preprocessing, labels,
                           SessionConfig(provider=provider))
    result = predict_images(config)
    for line in result.notes:
        notice(line)
    for p in result.predictions:
        for w in p.warnings:
            err_console.print(f"[yellow]warning:[/] {w}")
    if json_to_stdout(json_out):
        emit_json(json_out, result.to_dict(), force)
        return
    from cnnkit.data.preprocess import PreprocessRecord

    console.print(f"{Path(result.model).name}: preprocessing {PreprocessRecord.from_dict(result.preprocess).describe()}; "
                  f"classes from {result.class_names_from}; output {result.output['name']}: {result.output['kind']}")
    for p in result.predictions:
        console.print(f"{p.image}:")
        for rank, c in enumerate(p.top, 1):
            console.print(f"  {rank}. {c.name:<20} {100 * c.probability:6.2f} %  (class {c.index})")
    emit_json(json_out, result.to_dict(), force)
