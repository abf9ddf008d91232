"""``cnnkit featuremaps MODEL.onnx (--image PNG | --index N) -o DIR``: activation maps of every conv layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cnnkit.cli.options import with_preprocess_options
from cnnkit.cli.render import DATASET_HELP, JSON_HELP, check_json_target, console, emit_json, json_to_stdout, notice


@with_preprocess_options
def featuremaps_command(
    model: Path = typer.Argument(..., help="The .onnx model."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the PNG grids."),
    image: Path = typer.Option(None, "--image", help="An image file (JPEG, PNG, ...), any size: fitted by the preprocessing record."),
    dataset: str = typer.Option(None, "--dataset", help="With --index: take the test image from this dataset. " + DATASET_HELP),
    data_dir: Path = typer.Option(None, "--data-dir", envvar="CNNKIT_DATA_DIR"),
    index: int = typer.Option(None, "--index", help="Which test image (with --dataset, the default dataset, or an image folder as --data-dir)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing, non-empty folder (and the --json file)."),
    max_layers: int = typer.Option(16, "--max-layers", help="Convolution layers to draw, evenly spread; 0: all."),
    max_channels: int = typer.Option(32, "--max-channels", help="Channels per layer, the most varied; 0: all."),
    preprocessing: Any = None,  # the shared preprocessing options, parsed (with_preprocess_options)
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP + " featuremaps.json in the folder is written either way."),
) -> None:
    """Save the activation maps of convolution layers for one input, as PNG grids with layer name and shape
    (bounded by default: at most 16 layers and 32 channels each, said in the output)."""
    from cnnkit.errors import CnnkitError
    from cnnkit.data.preprocess import record_for_model
    from cnnkit.evaluate.featuremaps import feature_maps_from_dataset, load_image, save_feature_maps
    from cnnkit.graph.info import describe_onnx

    check_json_target(json_out, force)
    if (image is None) == (index is None):
        raise CnnkitError("give exactly one input: --image PNG, or --index N (with --dataset)",
                          hint=f"e.g. cnnkit featuremaps {model} --index 0 -o maps/")
    info = describe_onnx(model)
    record, note = record_for_model(info, preprocessing)
    if note:
        notice(note)
    if image is not None:
        from cnnkit.io import sha256_file

        x, source = load_image(image, record), str(image)
        provenance = {"image": str(image), "sha256": sha256_file(image)}
    else:
        x, source, images = feature_maps_from_dataset(model, dataset, data_dir, index, record)
        if images.notice:
            notice(images.notice)
        provenance = images.describe() | {"index": index}
    result = save_feature_maps(model, x, output, source, force, max_layers=max_layers or None,
                               max_channels=max_channels or None, record=record, provenance=provenance)
    if not json_to_stdout(json_out):
        console.print(f"{source}: predicted class {result.predicted}")
        for layer in result.layers:
            cut = f" ({len(layer.channels_shown)} shown)" if len(layer.channels_shown) < layer.shape[0] else ""
            console.print(f"  {layer.layer}: {'x'.join(map(str, layer.shape))}{cut} -> {output / layer.png}")
        if result.selection_note:
            console.print(f"shown: {result.selection_note}")
    emit_json(json_out, result.to_dict() | {"selection": result.selection_note}, force)
