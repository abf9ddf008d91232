"""``cnnkit eval MODEL.onnx [MORE.onnx ...]``: accuracy on labelled data, variants side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cnnkit.cli.options import address_option, engine_option, labels_option, skip_bad_images_option, with_preprocess_options
from cnnkit.cli.render import (
    DATASET_HELP, JSON_HELP, check_json_target, console, emit_json, figure_column, image_progress, json_to_stdout, new_table,
    notice, print_section, print_table, text_column,
)


@with_preprocess_options
def eval_command(
    models: list[Path] = typer.Argument(..., help="One or more .onnx models (e.g. FP32, INT8 and FP16 variants)."),
    dataset: str = typer.Option(None, "--dataset", help=DATASET_HELP),
    data_dir: Path = typer.Option(None, "--data-dir", envvar="CNNKIT_DATA_DIR", help="Dataset files, or a folder of class subfolders of JPEG/PNG images."),
    labels: Path = labels_option,
    preprocessing: Any = None,  # the shared preprocessing options, parsed (with_preprocess_options)
    skip_bad_images: bool = skip_bad_images_option,
    provider: str = typer.Option("cpu", "--provider"),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="onnxruntime, openvino, openvino:bf16 or litert."),
    tflite: Path = typer.Option(None, "--tflite", help="LiteRT's .tflite. Default: the .tflite beside the .onnx."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback"),
    batch_size: int = typer.Option(256, "--batch-size"),
    limit: int = typer.Option(None, "--limit", help="Evaluate only N test images (the first N; of an image folder, N spread over its classes)."),
    confusion: bool = typer.Option(False, "--confusion", help="Print each model's confusion matrix."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
    engine: str = engine_option,
    address: str = address_option,
    workers: int = typer.Option(None, "--workers", help="With --engine ray: workers (one CPU each). Default: the cluster's CPUs."),
) -> None:
    """Top-1 and top-5 accuracy, per-class accuracy and confusion matrix of each model on labelled images."""
    from cnnkit.distributed.engine import run_eval
    from cnnkit.evaluate.accuracy import EvalConfig
    from cnnkit.graph.info import describe_onnx
    from cnnkit.runtimes.registry import parse_one_runtime
    from cnnkit.runtimes.sessions import SessionConfig

    check_json_target(json_out, force)
    config = EvalConfig(tuple(models), dataset, data_dir, SessionConfig(provider=provider, allow_fallback=allow_fallback),
                        batch_size, limit, preprocessing, skip_bad_images, labels,
                        runtime=parse_one_runtime(runtime, "eval"), tflite=tflite, engine=engine, address=address,
                        workers=workers)
    for m in config.models:  # a bad model file fails before any data is loaded
        describe_onnx(m)
    with image_progress() as (bar, task):
        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        result = run_eval(config, progress, notice)
    if result.skipped_images["count"]:
        notice(f"skipped {result.skipped_images['count']} unreadable image(s) (--skip-bad-images), e.g. "
               f"{result.skipped_images['examples'][0]}")
    if not json_to_stdout(json_out):
        render_eval(result, confusion)
    emit_json(json_out, result.to_dict(), force)


def render_eval(result, confusion: bool = False) -> None:  # noqa: ANN001 (EvalResult, imported lazily)
    from cnnkit.report.sections import eval_section

    d = result.dataset
    rate = f", {result.images_per_s:,.0f} images/s" if result.images_per_s else ""
    skipped = f", {result.skipped_images['count']} skipped as unreadable" if result.skipped_images["count"] else ""
    console.print(f"dataset {d['name']} ({d['source']}): {d['evaluated_samples']:,} test images{skipped}{rate}")
    if result.engine:
        e = result.engine
        console.print(f"engine ray ({e['address']}): {e['workers']} workers on {e['nodes_used']} of {e['nodes']} node(s), "
                      f"batch {e['batch_size']}, {e['wall_s']:.1f} s wall (first batch after {e['first_batch_s'] or 0:.1f} s); "
                      f"{e['images_returned']:,} of {e['images_expected']:,} images came back, each once")
    from cnnkit.data.preprocess import PreprocessRecord

    for m in result.models:
        if m.preprocess:
            console.print(f"{Path(m.model).name}: preprocessing {PreprocessRecord.from_dict(m.preprocess).describe()}")
    print_section(eval_section(result, compact=True))
    if len(result.class_names) > 20:
        console.print(f"({len(result.class_names)} classes: per-class accuracy and confusion matrices are in --json)")
        return
    per = new_table("per-class accuracy (%)")
    text_column(per, "model")
    for name in result.class_names:
        figure_column(per, name)
    for m in result.models:
        per.add_row(Path(m.model).name, *["-" if a is None else f"{100 * a:.1f}" for a in m.per_class_accuracy])
    print_table(per)
    if confusion:
        for m in result.models:
            cm = new_table(f"confusion matrix of {Path(m.model).name} (rows: true, columns: predicted)")
            text_column(cm, "")
            for name in result.class_names:
                figure_column(cm, name)
            for name, row in zip(result.class_names, m.confusion, strict=True):
                cm.add_row(name, *[str(v) for v in row])
            print_table(cm)
