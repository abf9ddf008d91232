"""``cnnkit eval MODEL.onnx [MORE.onnx ...]``: accuracy on labelled data, variants side by side."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.cli.render import console, err_console, notice, print_json


def eval_command(
    models: list[Path] = typer.Argument(..., help="One or more .onnx models (e.g. FP32, INT8 and FP16 variants)."),
    dataset: str = typer.Option(None, "--dataset", help="mnist, fashion_mnist or digits. Default: MNIST where it can be had, else digits."),
    data_dir: Path = typer.Option(None, "--data-dir", envvar="CNNKIT_DATA_DIR"),
    provider: str = typer.Option("cpu", "--provider"),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="onnxruntime, openvino, openvino:bf16 or litert."),
    tflite: Path = typer.Option(None, "--tflite", help="LiteRT's .tflite. Default: the .tflite beside the .onnx."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback"),
    batch_size: int = typer.Option(256, "--batch-size"),
    limit: int = typer.Option(None, "--limit", help="Evaluate only the first N test images."),
    confusion: bool = typer.Option(False, "--confusion", help="Print each model's confusion matrix."),
    json_out: Path = typer.Option(None, "--json", help="Write the full result here."),
    force: bool = typer.Option(False, "--force"),
    as_json: bool = typer.Option(False, "--print-json", help="Print the result as JSON instead of tables."),
) -> None:
    """Top-1 accuracy, per-class accuracy and confusion matrix of each model on the test split."""
    from rich.progress import BarColumn, Progress, TextColumn

    from cnnkit.datasets import load_dataset
    from cnnkit.evaluate import EvalConfig, evaluate_models
    from cnnkit.io import check_writable, write_json_atomic
    from cnnkit.sessions import SessionConfig

    if json_out is not None:
        check_writable(json_out, force)
    from cnnkit.runtimes import parse_runtimes

    runtimes = parse_runtimes(runtime)
    if len(runtimes) != 1:
        from cnnkit.errors import CnnkitError

        raise CnnkitError(f"eval runs one runtime at a time, got --runtime {runtime}", hint="cnnkit bench --recommend evaluates several")
    config = EvalConfig(tuple(models), dataset, data_dir, SessionConfig(provider=provider, allow_fallback=allow_fallback),
                        batch_size, limit, runtime=runtimes[0], tflite=tflite)
    from cnnkit.onnx_info import describe_onnx

    for m in config.models:  # a bad model file fails before any data is loaded
        describe_onnx(m)
    data = load_dataset(config.dataset, config.data_dir, require_train=False)
    if data.notice:
        notice(data.notice)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("eval", total=None)
        result = evaluate_models(config, data, lambda what, done, total: bar.update(task, description=what, completed=done, total=total))
    if json_out is not None:
        write_json_atomic(json_out, result.to_dict(), force=force)
    if as_json:
        print_json(result.to_dict())
        return
    render_eval(result, confusion)
    if json_out is not None:
        console.print(f"wrote {json_out}")


def render_eval(result, confusion: bool = False) -> None:  # noqa: ANN001 (EvalResult, imported lazily)
    from rich.table import Table

    from cnnkit.sessions import provider_label

    d = result.dataset
    console.print(f"dataset {d['name']} ({d['source']}): {d['evaluated_samples']:,} test images")
    table = Table(title_justify="left")
    for col in ("model", "precision", "size", "provider", "accuracy", "Δ vs first", "agrees with first"):
        table.add_column(col, justify="left" if col in ("model", "precision", "provider") else "right", no_wrap=True)
    base = result.models[0].accuracy
    for m in result.models:
        table.add_row(Path(m.model).name, m.precision, f"{m.size_bytes / 1024:,.0f} KiB", provider_label(m.provider), f"{100 * m.accuracy:.2f} %",
                      f"{100 * (m.accuracy - base):+.2f} pp", f"{100 * m.agreement_with_first:.2f} %")
    console.print(table)
    per = Table(title="per-class accuracy", title_justify="left")
    per.add_column("model", no_wrap=True)
    for name in result.class_names:
        per.add_column(name, justify="right")
    for m in result.models:
        per.add_row(Path(m.model).name, *["-" if a is None else f"{100 * a:.1f}" for a in m.per_class_accuracy])
    console.print(per)
    if confusion:
        for m in result.models:
            cm = Table(title=f"confusion matrix of {Path(m.model).name} (rows: true, columns: predicted)", title_justify="left")
            cm.add_column("")
            for name in result.class_names:
                cm.add_column(name, justify="right")
            for name, row in zip(result.class_names, m.confusion, strict=True):
                cm.add_row(name, *[str(v) for v in row])
            console.print(cm)
