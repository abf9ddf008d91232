"""The training stage: spec + dataset -> trained ``model.keras`` with its history, curves and record.

Defaults are the seed setup: rmsprop, categorical cross-entropy, batch 64, 5 epochs. A validation split
is held out of the training data (never the test data). Outputs are staged in a hidden folder and
renamed into place one by one, ``train.json`` last, so no half-written file survives a crash or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.choices import Optimizer
from cnnkit.data.datasets import Dataset, load_dataset
from cnnkit.envinfo import environment
from cnnkit.errors import CnnkitError, OutputExistsError
from cnnkit.finite import NonFiniteError, require_finite
from cnnkit.io import check_output_dir, write_json_atomic
from cnnkit.keras.spec import ModelSpec, load_spec
from cnnkit.keras.summary import ModelSummary, summarize_keras
from cnnkit.results.load import TRAIN_RECORD_FILE, TRAIN_SCHEMA

MODEL_FILE, HISTORY_FILE, CURVES_FILE = "model.keras", "history.csv", "training_curves.png"


_DEFAULT_LR = {Optimizer.RMSPROP: 1e-3, Optimizer.ADAM: 1e-3, Optimizer.SGD: 1e-2}


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how. Defaults: the seed setup on the default dataset (MNIST, else digits)."""

    spec: str = "mnist-cnn"
    dataset: str | None = None  # None: MNIST where it can be had, else digits
    data_dir: Path | None = None  # None: $CNNKIT_DATA_DIR
    out_dir: Path | None = None  # None: models/<spec name>/
    epochs: int = 5
    batch_size: int = 64
    optimizer: Optimizer = Optimizer.RMSPROP
    learning_rate: float | None = None  # None: the optimizer's Keras default
    seed: int = 0
    validation_split: float = 0.1
    early_stopping_patience: int = 3
    reduce_lr_patience: int = 2
    limit_train: int | None = None  # use only the first N training samples (quick runs)
    limit_test: int | None = None
    force: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise CnnkitError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}",
                                  hint=f"e.g. --{name.replace('_', '-')} { {'epochs': 5, 'batch_size': 64}[name]} (the default)")
        if not 0 < self.validation_split < 1:
            raise CnnkitError(f"--validation-split must be in (0, 1), got {self.validation_split}", hint="a share of the training images, e.g. --validation-split 0.1")
        require_finite("--lr", self.learning_rate)
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise CnnkitError(f"--lr must be positive, got {self.learning_rate}", hint="e.g. --lr 0.001; leave it out for the optimizer's default")
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise CnnkitError(f"--{name.replace('_', '-')} must be positive, got {value}", hint="leave it out to use every sample")


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    model_path: Path
    spec: ModelSpec
    summary: ModelSummary
    dataset: dict[str, Any]
    metrics: dict[str, float]  # final train/val/test loss and accuracy
    epochs_run: int
    best_epoch: int
    wall_time_s: float
    notice: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "model_path": str(self.model_path),
            "spec": self.spec.to_dict(),
            "params": self.summary.total_params,
            "dataset": self.dataset,
            "metrics": self.metrics,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "wall_time_s": self.wall_time_s,
            "notice": self.notice,
            "files": self.files,
        }


EpochCallback = Callable[[int, int, dict[str, float]], None]


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) index split of ``range(n)``; at least one sample on each side."""
    n_val = min(max(1, int(round(n * fraction))), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_model(
    config: TrainConfig,
    dataset: Dataset | None = None,
    on_epoch_end: EpochCallback | None = None,
    notify: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config.spec`` and write the model, history, curves and ``train.json`` to ``config.out_dir``.

    ``dataset`` defaults to loading ``config.dataset``; ``notify`` receives lines the user should see
    (such as the fallback to digits) before training starts.
    """
    spec = load_spec(config.spec)
    out_dir = Path(config.out_dir) if config.out_dir is not None else Path("models") / spec.name
    if config.out_dir is None:  # the default's parent (models/) is cnnkit's to make
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    final_model = out_dir / MODEL_FILE
    check_output_dir(out_dir, force=True)  # a folder with other files is fine; only model.keras is guarded
    if final_model.exists() and not config.force:
        raise OutputExistsError(f"{final_model} already exists", hint="pass --force to overwrite, or choose --out")
    if dataset is None:
        dataset = load_dataset(config.dataset, config.data_dir)
    if dataset.notice and notify is not None:
        notify(dataset.notice)
    dataset = dataset.limited(config.limit_train, config.limit_test)
    if dataset.image_shape != spec.input.shape:
        raise CnnkitError(
            f"dataset {dataset.name.value} has images of shape {dataset.image_shape}, spec {spec.name} expects {spec.input.shape}"
        )
    if len(dataset.class_names) != spec.output.classes:
        raise CnnkitError(
            f"dataset {dataset.name.value} has {len(dataset.class_names)} classes, spec {spec.name} outputs {spec.output.classes}"
        )
    if len(dataset.x_train) < 2:
        raise CnnkitError(f"need at least 2 training samples, got {len(dataset.x_train)}",
                          hint="raise --limit-train, or give --data-dir with more training images")

    from cnnkit._deps import capture_native_stderr, require_keras, require_tensorflow

    tf = require_tensorflow()
    keras = require_keras()
    from cnnkit.keras.build import build_model

    # Same seed, same data, same machine -> same weights.
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    train_idx, val_idx = split_validation(len(dataset.x_train), config.validation_split, config.seed)
    n_classes = spec.output.classes
    x = dataset.x_train.astype(np.float32)
    y = keras.utils.to_categorical(dataset.y_train, n_classes)
    x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    x_test = dataset.x_test.astype(np.float32)
    y_test = keras.utils.to_categorical(dataset.y_test, n_classes)

    model = build_model(spec)
    lr = config.learning_rate if config.learning_rate is not None else _DEFAULT_LR[config.optimizer]
    optimizer = {
        Optimizer.RMSPROP: keras.optimizers.RMSprop,
        Optimizer.ADAM: keras.optimizers.Adam,
        Optimizer.SGD: keras.optimizers.SGD,
    }[config.optimizer](learning_rate=lr)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        callbacks = [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True
            ),
            keras.callbacks.ModelCheckpoint(str(staging / MODEL_FILE), monitor="val_loss", save_best_only=True),
            keras.callbacks.CSVLogger(str(staging / HISTORY_FILE)),
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=config.reduce_lr_patience, min_lr=1e-6
            ),
        ]
        diverged: list[str] = []

        def stop_on_nonfinite(batch: int, logs: dict[str, Any] | None) -> None:
            loss = float((logs or {}).get("loss", 0.0))
            if not np.isfinite(loss) and not diverged:
                diverged.append(f"the training loss became {loss} at epoch {epoch_now[0]}, batch {batch + 1}")
                model.stop_training = True

        epoch_now = [1]
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: epoch_now.__setitem__(0, epoch + 1), on_train_batch_end=stop_on_nonfinite))
        if on_epoch_end is not None:
            callbacks.append(
                keras.callbacks.LambdaCallback(
                    on_epoch_end=lambda epoch, logs: on_epoch_end(
                        epoch + 1, config.epochs, {k: float(v) for k, v in (logs or {}).items()}
                    )
                )
            )
        started = time.perf_counter()
        with capture_native_stderr():
            history = model.fit(
                x_train, y_train, batch_size=config.batch_size, epochs=config.epochs,
                validation_data=(x_val, y_val), callbacks=callbacks, shuffle=True, verbose=0,
            )
        wall = time.perf_counter() - started
        if diverged or not all(np.isfinite(v).all() for v in history.history.values()):
            why = diverged[0] if diverged else "a training metric became NaN or Inf"
            raise NonFiniteError(f"training of {spec.name} stopped: {why}; nothing was written",
                                 hint="lower --lr, or check the data for NaN pixels")
        # The checkpoint holds the best epoch; evaluate exactly what is saved.
        model.load_weights(str(staging / MODEL_FILE))
        metrics = {}
        # evaluate() builds its own tf.data pipeline, and TensorFlow's C++ logger writes about it to fd 2
        # (E0000 ... use_unbounded_threadpool): held back like fit's.
        with capture_native_stderr():
            for split, (xs, ys) in {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}.items():
                loss, acc = model.evaluate(xs, ys, batch_size=256, verbose=0)
                metrics[f"{split}_loss"], metrics[f"{split}_accuracy"] = float(loss), float(acc)
        if not all(np.isfinite(v) for v in metrics.values()):
            raise NonFiniteError(f"training of {spec.name} gave non-finite metrics {metrics}; nothing was written",
                                 hint="lower --lr, or check the data for NaN pixels")
        hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        val_losses = hist.get("val_loss", [])
        best_epoch = int(np.argmin(val_losses)) + 1 if val_losses else len(hist.get("loss", []))
        _plot_curves(hist, staging / CURVES_FILE, title=f"{spec.name} on {dataset.name.value}")

        summary = summarize_keras(model)
        described = dataset.describe() | {
            "train_samples_used": int(len(train_idx)),
            "validation_samples": int(len(val_idx)),
            "validation_from": "training split (seeded random hold-out)",
        }
        result = TrainResult(
            out_dir=out_dir, model_path=final_model, spec=spec, summary=summary, dataset=described,
            metrics=metrics, epochs_run=len(hist.get("loss", [])), best_epoch=best_epoch, wall_time_s=wall,
            notice=dataset.notice,
            files={"model": MODEL_FILE, "history": HISTORY_FILE, "curves": CURVES_FILE, "record": TRAIN_RECORD_FILE},
        )
        record = {"schema": TRAIN_SCHEMA} | result.to_dict() | {
            "config": {k: (v.value if isinstance(v, Enum) else str(v) if isinstance(v, Path) else v)
                       for k, v in asdict(config).items()},
            "history": hist,
            "environment": environment(),
        }
        for name in (MODEL_FILE, HISTORY_FILE, CURVES_FILE):
            os.replace(staging / name, out_dir / name)
        write_json_atomic(out_dir / TRAIN_RECORD_FILE, record)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
    return result


def _plot_curves(history: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, label in (("", "train"), ("val_", "validation")):
            if f"{prefix}{metric}" in history:
                ax.plot(epochs, history[f"{prefix}{metric}"], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
