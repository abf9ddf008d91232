"""Accuracy of ONNX models on labelled images: top-1, top-5, per class, confusion matrix; variants side by side.

Images come from a named dataset's test split or an image folder (``--data-dir``), decoded and fed batch by
batch through each model's preprocessing record, so a 50,000-image folder is never held in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.folders import SkippedImages
from cnnkit.data.preprocess import PreprocessChoice, record_for_model
from cnnkit.data.sources import ImageSource, model_class_names, open_images
from cnnkit.data.datasets import Dataset
from cnnkit.choices import check_engine
from cnnkit.envinfo import environment
from cnnkit.errors import CnnkitError, DatasetError
from cnnkit.finite import NonFiniteError
from cnnkit.graph.info import describe_onnx
from cnnkit.runtimes.base import Runner, RunnerInfo
from cnnkit.runtimes.registry import DEFAULT_RUNTIME, RuntimeChoice, create_runner
from cnnkit.runtimes.sessions import SessionConfig
from cnnkit.topk import ScoreTally

SCHEMA = "cnnkit.eval/1"
MAX_CONFUSION_CLASSES = 100  # beyond this the confusion matrix is left out of the result (it grows as classes²)


@dataclass(frozen=True)
class EvalConfig:
    """Defaults: the default dataset's test split (MNIST, else digits), batches of 256, CPU, each model's own
    preprocessing record (else raw pixels), stop at the first bad image, in this process (engine local)."""

    models: tuple[Path, ...]
    dataset: str | None = None
    data_dir: Path | None = None
    session: SessionConfig = field(default_factory=SessionConfig)
    batch_size: int = 256
    limit: int | None = None  # the first N test images only
    preprocess: PreprocessChoice | None = None
    skip_bad_images: bool = False
    labels_file: Path | None = None
    runtime: RuntimeChoice = DEFAULT_RUNTIME  # onnxruntime (default), openvino[:bf16] or litert
    tflite: Path | None = None  # LiteRT's model; default: the .tflite beside each .onnx
    engine: str = "local"  # or "ray": the image folder scored on a Ray cluster (cnnkit.distributed.engine.run_eval)
    address: str | None = None  # engine ray: the cluster (default: $RAY_ADDRESS, else a local one)
    workers: int | None = None  # engine ray: actors, one CPU each (default: the cluster's CPUs)

    def __post_init__(self) -> None:
        if not self.models:
            raise CnnkitError("no model given", hint="cnnkit eval MODEL.onnx [MORE.onnx ...]")
        if check_engine(self.engine) == "local" and self.workers is not None:
            raise CnnkitError("--workers needs --engine ray", hint="add --engine ray, or drop --workers")
        if self.batch_size <= 0:
            raise CnnkitError(f"--batch-size must be positive, got {self.batch_size}", hint="images per call, e.g. --batch-size 256 (the default)")
        if self.limit is not None and self.limit <= 0:
            raise CnnkitError(f"--limit must be positive, got {self.limit}", hint="e.g. --limit 500; leave it out to evaluate every test image")


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
    confusion: tuple[tuple[int, ...], ...]  # rows: true class, columns: predicted; () beyond 100 classes
    agreement_with_first: float  # top-1 agreement with the first model given
    top5_accuracy: float | None = None  # None when the model has 5 classes or fewer
    preprocess: dict[str, Any] = field(default_factory=dict)  # the record the images went through
    runtime: str = "onnxruntime"


@dataclass(frozen=True)
class EvalResult:
    schema: str
    dataset: dict[str, Any]
    class_names: tuple[str, ...]
    models: tuple[ModelEval, ...]
    environment: dict[str, Any]
    skipped_images: dict[str, Any] = field(default_factory=lambda: {"count": 0, "examples": []})
    images_per_s: float | None = None  # images evaluated per second of wall time (decoding, preprocessing, every model)
    engine: dict[str, Any] | None = None  # distributed eval only: engine, nodes, workers, batch size, images/s, wall time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the result") -> EvalResult:
        from cnnkit.results.load import from_dict

        return from_dict(data, source, expect=SCHEMA)


def accuracy_change_pp(reference: float, accuracy: float) -> float:
    """The one sign convention for "accuracy ... pp vs FP32 (or vs the first model)": ``accuracy - reference``,
    in percentage points; negative means worse. (A *drop* is its opposite.)"""
    return 100 * (accuracy - reference)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


@dataclass
class _Tally:
    """One model's running counts over the batches."""

    model: Path
    info: Any
    record: Any
    runner: Runner  # built from config.runtime by cnnkit.runtimes.registry.create_runner
    scores: ScoreTally = field(default_factory=ScoreTally)  # NaN/Inf in them: no accuracy is reported


def tally_source(runner: Runner, source: ImageSource, record: Any, skipped: SkippedImages | None = None,
                 batch_size: int = 256, transform: Callable[[np.ndarray], np.ndarray] | None = None
                 ) -> tuple[ScoreTally, np.ndarray, float]:
    """One model's scores over every image of ``source``, streamed in batches of ``batch_size`` (default 256), the
    images' labels (-1: unlabelled; empty when every image was skipped) and the seconds spent in inference alone.
    ``transform`` moves the decoded pixels before the record normalises them (None: as decoded). NaN/Inf are
    counted in the tally, not judged here."""
    scores, labels, seconds = ScoreTally(), [], 0.0
    for pixels, y in source.batches(record, batch_size, skipped):
        if transform is not None:
            pixels = transform(pixels)
        feed = {runner.input_name: record.normalize(pixels)}
        started = time.perf_counter()
        out = runner.infer(feed)
        seconds += time.perf_counter() - started
        scores.add(next(iter(out.values())).reshape(len(pixels), -1))
        labels.append(y)
    return scores, np.concatenate(labels) if labels else np.empty(0, np.int64), seconds


def evaluate_models(config: EvalConfig, dataset: Dataset | ImageSource | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    notify: Callable[[str], None] | None = None) -> EvalResult:
    """Evaluate every model on the same test images, streamed in batches; each model gets its own record."""
    infos = [describe_onnx(m) for m in config.models]
    say = notify or (lambda _m: None)
    tallies = [_Tally(Path(model), info, record, create_runner(config.runtime, model, config.session, config.tflite))
               for model, info, record in zip(config.models, infos, model_records(config, infos, say), strict=True)]
    source = open_eval_source(config, infos, dataset, say)
    skipped = SkippedImages() if config.skip_bad_images else None
    labels: list[np.ndarray] = []
    total, done = len(source), 0
    started = time.perf_counter()
    # One decoding pass for models that share a geometry (size, channels, crop); each normalises on its own.
    groups: dict[tuple[Any, ...], list[_Tally]] = {}
    for t in tallies:
        groups.setdefault((t.record.size, t.record.channels, t.record.crop_fraction), []).append(t)
    for gi, group in enumerate(groups.values()):
        names = ", ".join(t.model.name for t in group)
        for pixels, y in source.batches(group[0].record, config.batch_size, skipped if gi == 0 else None):
            if gi == 0:
                labels.append(y)
            for t in group:
                out = t.runner.infer({t.runner.input_name: t.record.normalize(pixels)})
                t.scores.add(next(iter(out.values())).reshape(len(pixels), -1), y)
            done += len(pixels)
            if progress:
                progress(f"eval {names}", done, total * len(groups))
        if skipped is not None and gi == 0:
            total = done  # later passes skip the same files
    seconds = time.perf_counter() - started
    y = np.concatenate(labels) if labels else np.empty(0, np.int64)
    if len(y) == 0:
        raise DatasetError(f"{source.provenance.get('source')}: every image was skipped as unreadable")
    broken = [f"{t.model.name}: {t.scores.bad.describe('output value', 'image')}" for t in tallies
              if t.scores.bad is not None]
    if broken:  # every model is checked; one error lists all that failed
        raise NonFiniteError("; ".join(broken), hint="the model is broken for these inputs; no accuracy is reported")
    for t in tallies:
        if t.scores.tied:
            say(f"{t.model.name}: {t.scores.tied} of {len(y)} image(s) have classes tied for the top score; "
                "ties rank by class index (lowest first), the same for top-1 and top-5")

    results, class_names = summarise_predictions(
        [ModelPredictions.ran_by(t.runner.info, t.model, t.info, t.record, t.scores.predictions(),
                                 t.scores.top5_hits, t.scores.n_outputs) for t in tallies], y, source)
    for line in label_mismatch_warnings(results, source):
        say(line)
    described = source.describe() | {"evaluated_samples": int(len(y)), "split": source.provenance.get("split", "test")}
    return EvalResult(SCHEMA, described, tuple(class_names), tuple(results), environment(),
                      skipped.to_dict() if skipped else {"count": 0, "examples": []},
                      len(y) / seconds if seconds > 0 else None)


def model_records(config: EvalConfig, infos: list[Any], say: Callable[[str], None]) -> list[Any]:
    """Each model's bound preprocessing record (its metadata's, else the options'), saying where it came from."""
    records = []
    for model, info in zip(config.models, infos, strict=True):
        record, note = record_for_model(info, config.preprocess)
        if note:
            say(f"{Path(model).name}: {note}")
        records.append(record)
    return records


def open_eval_source(config: EvalConfig, infos: list[Any], dataset: Dataset | ImageSource | None = None,
                     say: Callable[[str], None] = lambda _m: None) -> ImageSource:
    """The labelled test images eval runs on (``--limit`` applied): ``dataset`` when given, else the image
    folder or dataset the config names, labelled by the first model's class names where it has them."""
    if isinstance(dataset, ImageSource):
        source = dataset
    elif dataset is not None:
        source = ImageSource.from_dataset(dataset, "test")
    else:
        names, names_from = model_class_names(infos[0].metadata, config.labels_file)
        source = open_images(config.dataset, config.data_dir, "test", names, names_from, model=config.models[0],
                             strict_names=config.labels_file is not None, model_classes=infos[0].classes)
    if source.notice:
        say(source.notice)
    if not source.labelled:
        raise DatasetError(f"{source.provenance.get('source')} holds unlabelled images; eval needs labels",
                           hint="put the images in one subfolder per class (the folder name is the class)")
    source = source.take(config.limit)
    if len(source) == 0:
        raise DatasetError(f"{source.provenance.get('source')}: no test images to evaluate",
                           hint="pass --data-dir with test images (an image folder, IDX files or an .npz)")
    return source


@dataclass(frozen=True)
class ModelPredictions:
    """One model's top-1 predictions over every image (in the source's order), and what ran it."""

    model: Path
    info: Any  # OnnxModelInfo
    record: Any  # the bound PreprocessRecord
    preds: np.ndarray
    top5_hits: int
    n_outputs: int
    precision: str
    provider: dict[str, Any]
    runtime: str
    size_bytes: int  # of what the runtime ran (a LiteRT .tflite is not the .onnx)

    @classmethod
    def ran_by(cls, ran: RunnerInfo, model: Path, info: Any, record: Any, preds: np.ndarray, top5_hits: int,
               n_outputs: int, provider: dict[str, Any] | None = None) -> ModelPredictions:
        """The predictions of a run ``ran`` says what ran (``provider``: a record to store instead of its own)."""
        return cls(model, info, record, preds, top5_hits, n_outputs, ran.precision,
                   provider if provider is not None else ran.provider_record(), ran.runtime,
                   ran.model_bytes or info.size_bytes)


def label_mismatch_warnings(results: Sequence[ModelEval], source: ImageSource) -> list[str]:
    """A line per model whose top-1 is 0 % on labels read off folder names: a figure that cannot be right for a
    trained model, most likely labels that are not its classes."""
    if source.folder is None:
        return []
    return [f"{Path(r.model).name}: 0 % top-1 on {r.samples} images labelled by "
            f"{source.provenance.get('labels_from')}: a trained model's classes are likely not these labels "
            "(--labels FILE names them: one class per line, in the model's output order)"
            for r in results if r.accuracy == 0 and r.samples >= 2]


def summarise_predictions(models: list[ModelPredictions], y: np.ndarray, source: ImageSource
                          ) -> tuple[list[ModelEval], tuple[str, ...]]:
    """Accuracy, top-5, per-class accuracy, confusion and agreement with the first model, from the predictions
    (local and distributed eval both end here), and the class names the result carries."""
    results: list[ModelEval] = []
    first_preds: np.ndarray | None = None
    class_names = source.class_names
    for t in models:
        preds = t.preds
        n_classes = max(len(class_names), t.n_outputs)
        if int(y.max(initial=0)) >= t.n_outputs:
            raise CnnkitError(f"{t.model}: has {t.n_outputs} outputs, the images are labelled with "
                              f"{len(class_names)} classes ({source.name})",
                              hint="evaluate on images of the model's classes, or pass --labels FILE")
        if len(class_names) < n_classes and t is models[0]:
            model_names, _ = model_class_names(t.info.metadata)
            class_names = model_names if model_names and len(model_names) == n_classes else (
                tuple(class_names) + tuple(str(i) for i in range(len(class_names), n_classes)))
        cm = confusion_matrix(y, preds, n_classes)
        support = cm.sum(axis=1)
        per_class = tuple(float(cm[i, i] / support[i]) if support[i] else None for i in range(n_classes))
        first_preds = preds if first_preds is None else first_preds
        results.append(ModelEval(
            model=str(t.model), sha256=t.info.sha256, precision=t.precision,
            size_bytes=t.size_bytes, provider=t.provider,
            samples=int(len(y)), accuracy=float(np.mean(preds == y)), runtime=t.runtime,
            per_class_accuracy=per_class,
            confusion=tuple(tuple(int(v) for v in row) for row in cm) if n_classes <= MAX_CONFUSION_CLASSES else (),
            agreement_with_first=float(np.mean(preds == first_preds)),
            top5_accuracy=t.top5_hits / len(y) if t.n_outputs > 5 else None,
            preprocess=t.record.to_dict(),
        ))
    return results, tuple(class_names)
