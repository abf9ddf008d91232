"""``cnnkit predict MODEL.onnx IMAGE...``: the top-k classes of each image, with probabilities."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.cli.options import (
    channel_order_option, crop_fraction_option, labels_option, mean_option, preprocess_choice, preprocess_option,
    scale_option, std_option,
)
from cnnkit.cli.render import console, err_console, notice, print_json


def predict_command(
    model: Path = typer.Argument(..., help="The .onnx image classifier."),
    images: list[Path] = typer.Argument(..., help="One or more image files (JPEG, PNG, ...), any size."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many classes to show per image."),
    preprocess: str = preprocess_option,
    scale: float = scale_option,
    mean: str = mean_option,
    std: str = std_option,
    channel_order: str = channel_order_option,
    crop_fraction: float = crop_fraction_option,
    labels: Path = labels_option,
    provider: str = typer.Option("cpu", "--provider"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Top-k classes with probabilities, through the model's preprocessing record and class names."""
    from cnnkit.predict import PredictConfig, predict_images
    from cnnkit.sessions import SessionConfig

    config = PredictConfig(model, tuple(images), top_k,
                           preprocess_choice(preprocess, scale, mean, std, channel_order, crop_fraction), labels,
                           SessionConfig(provider=provider))
    result = predict_images(config)
    for line in result.notes:
        notice(line)
    for p in result.predictions:
        for w in p.warnings:
            err_console.print(f"[yellow]warning:[/] {w}")
    if as_json:
        print_json(result.to_dict())
        return
    from cnnkit.data.preprocess import PreprocessRecord

    console.print(f"{Path(result.model).name}: preprocessing {PreprocessRecord.from_dict(result.preprocess).describe()}; "
                  f"classes from {result.class_names_from}; output {result.output['name']} ({result.output['kind']})")
    for p in result.predictions:
        console.print(f"{p.image}:")
        for rank, c in enumerate(p.top, 1):
            console.print(f"  {rank}. {c.name:<20} {100 * c.probability:6.2f} %  (class {c.index})")
