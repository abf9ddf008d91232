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
    images: list[Path] = typer.Argument(None, help="One or more image files (JPEG, PNG, ...), any size."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many classes to show per image."),
    labels: Path = labels_option,
    preprocessing: Any = None,  # the shared preprocessing options, parsed (with_preprocess_options)
    provider: str = typer.Option("cpu", "--provider"),
    probe: bool = typer.Option(False, "--probe-preprocess", help="Try every --preprocess preset on the images (or "
                               "--data-dir) and say which gives confident, stable answers; applies nothing."),
    data_dir: Path = typer.Option(None, "--data-dir", help="With --probe-preprocess: a folder of images (class "
                                  "subfolders: agreement with the labels too)."),
    probe_images: int = typer.Option(32, "--probe-images", help="With --probe-preprocess and --data-dir: images "
                                     "to try, spread over the class folders."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
) -> None:
    """Top-k classes with probabilities, through the model's preprocessing record and class names.
    With --probe-preprocess: which preprocessing preset the model answers best to."""
    from cnnkit.errors import CnnkitError
    from cnnkit.evaluate.predict import PredictConfig, predict_images
    from cnnkit.runtimes.sessions import SessionConfig

    check_json_target(json_out, force)
    images = images or []
    if probe:
        if preprocessing.given:
            raise CnnkitError("--probe-preprocess tries every preset itself; it takes no --preprocess, --scale, "
                              "--mean, --std, --channel-order or --crop-fraction", hint="drop them, or drop --probe-preprocess")
        _probe(model, images, data_dir, probe_images, labels, SessionConfig(provider=provider), json_out, force)
        return
    if data_dir is not None:
        raise CnnkitError("predict takes image files; --data-dir goes with --probe-preprocess",
                          hint=f"cnnkit predict {model} IMAGE..., or cnnkit eval {model} --data-dir {data_dir}")
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


def _probe(model: Path, images: list[Path], data_dir: Path | None, samples: int, labels: Path | None, session: Any,
           json_out: Path | None, force: bool) -> None:
    from rich.table import Table

    from cnnkit.evaluate.probe import probe_preprocessing

    result = probe_preprocessing(model, images, data_dir, samples, labels, session)
    if json_to_stdout(json_out):
        emit_json(json_out, result.to_dict(), force)
        return
    own = result.model_record or "none (cnnkit feeds raw pixels unless told)"
    console.print(f"{Path(result.model).name}: {result.images} image(s) from {result.source}"
                  f"{', labelled' if result.labelled else ', unlabelled'}; the model's preprocessing record: {own}")
    table = Table(title_justify="left")
    columns = ["preset", "top-1 prob", "margin", "stable", "labels", "classes", "score"]
    for col in columns:
        table.add_column(col, justify="left" if col == "preset" else "right", no_wrap=True)

    def share(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for s in result.scores:
        table.add_row(s.preset, share(s.mean_top1_probability), share(s.mean_margin), share(s.stability),
                      share(s.label_agreement), str(s.distinct_top1), s.note or f"{s.score:.2f}")
    console.print(table)
    console.print("margin: top-1 minus top-2 probability; stable: share of images whose top-1 holds when pixels "
                  "move by up to ½ grey level")
    console.print("classes: different top-1 classes; score: " + ("agreement with the labels" if result.labelled
                                                                  else "margin x stable"))
    if result.suggestion is None:
        console.print(f"no suggestion: {result.reason}")
        emit_json(json_out, result.to_dict(), force)
        return
    console.print(f"suggestion: --preprocess {result.suggestion} ({result.reason})")
    if not result.labelled:
        console.print("no labels: a hint, not proof; check it with cnnkit eval on labelled images")
    console.print(f"nothing was applied: pass --preprocess {result.suggestion} to predict, eval, parity or quantize")
    emit_json(json_out, result.to_dict(), force)
