"""Accuracy of ONNX models on labelled images: top-1, per class, confusion matrix; variants side by side."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.datasets import Dataset, load_dataset
from cnnkit.envinfo import environment
from cnnkit.errors import CnnkitError
from cnnkit.onnx_info import describe_onnx
from cnnkit.runners import OnnxRuntimeRunner
from cnnkit.runtimes import DEFAULT_RUNTIME, RuntimeChoice, create_runner
from cnnkit.sessions import SessionConfig

SCHEMA = "cnnkit.eval/1"


@dataclass(frozen=True)
class EvalConfig:
    """Defaults: the default dataset's test split (MNIST, else digits), batches of 256, CPU."""

    models: tuple[Path, ...]
    dataset: str | None = None
    data_dir: Path | None = None
    session: SessionConfig = field(default_factory=SessionConfig)
    batch_size: int = 256
    limit: int | None = None  # the first N test images only
    runtime: RuntimeChoice = DEFAULT_RUNTIME  # onnxruntime (default), openvino[:bf16] or litert
    tflite: Path | None = None  # LiteRT's model; default: the .tflite beside each .onnx

    def __post_init__(self) -> None:
        if not self.models:
            raise CnnkitError("no model given", hint="cnnkit eval MODEL.onnx [MORE.onnx ...]")
        if self.batch_size <= 0:
            raise CnnkitError(f"--batch-size must be positive, got {self.batch_size}")
        if self.limit is not None and self.limit <= 0:
            raise CnnkitError(f"--limit must be positive, got {self.limit}")


@dataclass(frozen=True)
class ModelEval:
    model: str
    sha256: str
    precision: str
    size_bytes: int
    provider: dict[str, Any]
    samples: int
    accuracy: float
    per_class_accuracy: tuple[float | None, ...]  # None for a class with no test sample
    confusion: tuple[tuple[int, ...], ...]  # rows: true class, columns: predicted
    agreement_with_first: float  # top-1 agreement with the first model given
    runtime: str = "onnxruntime"


@dataclass(frozen=True)
class EvalResult:
    schema: str
    dataset: dict[str, Any]
    class_names: tuple[str, ...]
    models: tuple[ModelEval, ...]
    environment: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise CnnkitError(f"not a cnnkit eval result (expected schema {SCHEMA!r})")
        models = tuple(
            ModelEval(**(m | {"per_class_accuracy": tuple(m["per_class_accuracy"]),
                              "confusion": tuple(tuple(r) for r in m["confusion"])}))
            for m in data["models"]
        )
        return cls(data["schema"], data["dataset"], tuple(data["class_names"]), models, data["environment"])


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def predict(runner: OnnxRuntimeRunner, x: np.ndarray, batch_size: int,
            on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Top-1 class of every image, batch by batch."""
    preds = []
    for start in range(0, len(x), batch_size):
        out = runner.infer({runner.input_name: x[start : start + batch_size]})
        preds.append(np.argmax(next(iter(out.values())).reshape(len(x[start : start + batch_size]), -1), axis=1))
        if on_batch:
            on_batch(min(start + batch_size, len(x)))
    return np.concatenate(preds)


def evaluate_models(config: EvalConfig, dataset: Dataset | None = None,
                    progress: Callable[[str, int, int], None] | None = None) -> EvalResult:
    """Evaluate every model on the same test images."""
    infos = [describe_onnx(m) for m in config.models]
    if dataset is None:
        dataset = load_dataset(config.dataset, config.data_dir, require_train=False)
    x, y = dataset.x_test[: config.limit], dataset.y_test[: config.limit]
    n_classes = len(dataset.class_names)
    results: list[ModelEval] = []
    first_preds: np.ndarray | None = None
    for model, info in zip(config.models, infos, strict=True):
        if info.image_shape != dataset.image_shape:
            raise CnnkitError(
                f"{model}: takes images of shape {info.image_shape}, dataset {dataset.name.value} has {dataset.image_shape}",
                hint="choose the dataset the model was trained for (--dataset)",
            )
        runner = create_runner(config.runtime, model, config.session, config.tflite)
        name = Path(model).name
        preds = predict(runner, x, config.batch_size,
                        (lambda done, name=name: progress(f"eval {name}", done, len(x))) if progress else None)
        if preds.max(initial=0) >= n_classes:
            raise CnnkitError(f"{model}: predicts class {int(preds.max())}, dataset {dataset.name.value} has {n_classes} classes")
        cm = confusion_matrix(y, preds, n_classes)
        support = cm.sum(axis=1)
        per_class = tuple(float(cm[i, i] / support[i]) if support[i] else None for i in range(n_classes))
        first_preds = preds if first_preds is None else first_preds
        on_ort = isinstance(runner, OnnxRuntimeRunner)
        results.append(ModelEval(
            model=str(model), sha256=info.sha256, precision=info.precision if on_ort else runner.precision,
            size_bytes=info.size_bytes, provider=runner.session_info.to_dict() if on_ort else runner.provider,
            samples=int(len(y)), accuracy=float(np.mean(preds == y)),
            per_class_accuracy=per_class, confusion=tuple(tuple(int(v) for v in row) for row in cm),
            agreement_with_first=float(np.mean(preds == first_preds)), runtime=config.runtime.runtime,
        ))
    described = dataset.describe() | {"evaluated_samples": int(len(y)), "split": "test"}
    return EvalResult(SCHEMA, described, dataset.class_names, tuple(results), environment())
