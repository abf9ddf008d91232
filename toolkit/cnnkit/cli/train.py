"""``cnnkit train``: train a spec on a dataset (the seed setup by default)."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.cli.render import JSON_HELP, check_json_target, console, emit_json, json_to_stdout, notice
from cnnkit.choices import Optimizer


def train_command(
    spec: str = typer.Option("mnist-cnn", "--spec", help="Preset name or spec .toml file."),
    dataset: str = typer.Option(None, "--dataset", help="mnist, fashion_mnist or digits. Default: MNIST where it can be had, else digits."),
    data_dir: Path = typer.Option(None, "--data-dir", envvar="CNNKIT_DATA_DIR", help="Folder with the IDX files, or an .npz. Default: $CNNKIT_DATA_DIR."),
    out: Path = typer.Option(None, "--out", help="Output folder. Default: models/<spec name>/."),
    epochs: int = typer.Option(5, "--epochs"),
    batch_size: int = typer.Option(64, "--batch-size"),
    optimizer: Optimizer = typer.Option(Optimizer.RMSPROP, "--optimizer"),
    lr: float = typer.Option(None, "--lr", help="Learning rate. Default: the optimizer's (1e-3; sgd 1e-2)."),
    seed: int = typer.Option(0, "--seed"),
    validation_split: float = typer.Option(0.1, "--validation-split", help="Share of the training data held out for validation."),
    limit_train: int = typer.Option(None, "--limit-train", help="Use only the first N training samples."),
    limit_test: int = typer.Option(None, "--limit-test", help="Use only the first N test samples."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing model in --out (and the --json file)."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP + " train.json in --out is written either way."),
) -> None:
    """Train the CNN of a spec; writes model.keras, history.csv, training_curves.png and train.json."""
    from cnnkit.cli.summary import render_summary
    from cnnkit.keras.train import TrainConfig, train_model

    check_json_target(json_out, force)
    as_json = json_to_stdout(json_out)
    config = TrainConfig(
        spec=spec, dataset=dataset, data_dir=data_dir, out_dir=out, epochs=epochs, batch_size=batch_size,
        optimizer=optimizer, learning_rate=lr, seed=seed, validation_split=validation_split,
        limit_train=limit_train, limit_test=limit_test, force=force,
    )
    def on_epoch(epoch: int, total: int, logs: dict[str, float]) -> None:
        if not as_json:
            console.print(
                f"epoch {epoch}/{total}: loss {logs.get('loss', float('nan')):.4f} "
                f"acc {logs.get('accuracy', float('nan')):.4f}  val_loss {logs.get('val_loss', float('nan')):.4f} "
                f"val_acc {logs.get('val_accuracy', float('nan')):.4f}"
            )

    result = train_model(config, on_epoch_end=on_epoch, notify=notice)
    if as_json:
        emit_json(json_out, result.to_dict(), force)
        return
    render_summary(result.summary)
    m, d = result.metrics, result.dataset
    console.print(
        f"dataset {d['name']} ({d['source']}): {d['train_samples_used']:,} train, "
        f"{d['validation_samples']:,} validation (held out of train), {d['test_samples']:,} test"
    )
    console.print(
        f"{result.epochs_run} epochs in {result.wall_time_s:.1f} s, best epoch {result.best_epoch}: "
        f"train acc {m['train_accuracy']:.4f}, val acc {m['val_accuracy']:.4f}"
    )
    console.print(
        f"[bold]test accuracy {100 * m['test_accuracy']:.2f} %[/] (loss {m['test_loss']:.4f}) "
        f"on {d['test_samples']:,} {d['name']} test images"
    )
    console.print(f"wrote {result.out_dir}/: {', '.join(result.files.values())}")
    emit_json(json_out, result.to_dict(), force)
