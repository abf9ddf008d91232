"""Top-k classes of a few images, through the model's preprocessing record and class names.

Also warns when an image looks inverted against the images the model was trained on (a dark digit on white
for an MNIST model): the brightness of the image's border is compared with that of the model's dataset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.preprocess import PreprocessChoice, record_for_model
from cnnkit.data.sources import model_class_names, read_image_files
from cnnkit.errors import CnnkitError, DatasetError
from cnnkit.finite import NonFiniteError, nonfinite
from cnnkit.graph import metadata as meta
from cnnkit.graph.info import describe_onnx
from cnnkit.runtimes.sessions import SessionConfig
from cnnkit.topk import ranking

SCHEMA = "cnnkit.predict/1"
DARK, BRIGHT = 64.0, 160.0  # border brightness (0..255) below which a ground is dark, above which it is bright


@dataclass(frozen=True)
class PredictConfig:
    """Defaults: top 5, the model's own preprocessing record (else raw pixels), CPU."""

    model: Path
    images: tuple[Path, ...]
    top_k: int = 5
    preprocess: PreprocessChoice | None = None
    labels_file: Path | None = None
    session: SessionConfig = field(default_factory=SessionConfig)

    def __post_init__(self) -> None:
        if not self.images:
            raise CnnkitError("no image given", hint="cnnkit predict MODEL.onnx IMAGE [IMAGE ...], or --probe-preprocess "
                                                     "--data-dir DIR to find the preprocessing it wants")
        if self.top_k <= 0:
            raise CnnkitError(f"--top-k must be positive, got {self.top_k}", hint="classes shown per image, e.g. --top-k 5 (the default)")


@dataclass(frozen=True)
class ClassScore:
    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class ImagePrediction:
    image: str
    top: tuple[ClassScore, ...]
    brightness: dict[str, float]  # mean and border mean of the fitted pixels, 0..255
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PredictResult:
    schema: str
    model: str
    sha256: str
    preprocess: dict[str, Any]
    class_names_from: str
    output: dict[str, Any]  # name, and whether it held probabilities or logits (softmax applied)
    reference: dict[str, Any] | None  # the model's dataset's brightness, for the inversion check
    provider: dict[str, Any]
    predictions: tuple[ImagePrediction, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def brightness(pixels: np.ndarray) -> dict[str, float]:
    """Mean brightness of ``(..., H, W, C)`` uint8 pixels, and of their border (the outer tenth on each side)."""
    x = np.asarray(pixels, np.float64).mean(axis=-1)
    h, w = x.shape[-2:]
    b = max(1, round(0.1 * min(h, w)))
    mask = np.ones((h, w), bool)
    mask[b : h - b, b : w - b] = False
    return {"mean": float(x.mean()), "border_mean": float(x[..., mask].mean())}


def dataset_reference(name: str | None, record: Any, n: int = 500) -> dict[str, Any] | None:
    """Brightness of the first ``n`` test images of the model's dataset, fitted like the inputs; None where
    the model names no dataset cnnkit can load here."""
    from cnnkit.data.datasets import DatasetName, load_dataset

    if name not in {d.value for d in DatasetName}:
        return None
    try:
        ds = load_dataset(name, require_train=False)
    except DatasetError:
        return None
    return {"dataset": name, "source": ds.source, "images": min(n, len(ds.x_test))} | brightness(record.fit_array(ds.x_test[:n]))


def inversion_warning(image: str, seen: dict[str, float], reference: dict[str, Any] | None) -> str | None:
    """A line when the image's ground is bright where the dataset's is dark, or the other way round."""
    if reference is None:
        return None
    ref, got = reference["border_mean"], seen["border_mean"]
    if ref < DARK and got > BRIGHT:
        how = "bright", "dark", "light strokes on a dark ground"
    elif ref > BRIGHT and got < DARK:
        how = "dark", "bright", "dark strokes on a bright ground"
    else:
        return None
    return (f"{image} looks inverted against {reference['dataset']}: its border is {how[0]} (mean {got:.0f}/255) "
            f"where the training images' is {how[1]} (mean {ref:.0f}); the model was trained on {how[2]} — "
            f"invert the image (e.g. PIL.ImageOps.invert) if that is what it shows")


def as_probabilities(scores: np.ndarray) -> tuple[np.ndarray, str]:
    """Scores as probabilities (rows that already sum to 1 as they are, else softmax), and which they were."""
    s = scores.astype(np.float64)
    if s.min() >= 0 and s.max() <= 1 and np.allclose(s.sum(axis=-1), 1, atol=1e-3):
        return s, "probabilities"
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True), "logits (softmax applied)"


def predict_images(config: PredictConfig) -> PredictResult:
    """Run each image through the model's record and report its top-k classes."""
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner

    info = describe_onnx(config.model)
    record, note = record_for_model(info, config.preprocess)
    names, names_from = model_class_names(info.metadata, config.labels_file)
    pixels = read_image_files(config.images, record)
    runner = create_runner(DEFAULT_RUNTIME, config.model, config.session)
    reference = dataset_reference(meta.dataset(info.metadata), record)
    predictions = []
    kind = ""
    for path, px in zip(config.images, pixels, strict=True):
        out = runner.infer({runner.input_name: record.normalize(px[None])})
        scores = next(iter(out.values())).reshape(1, -1)
        bad = nonfinite(scores)
        if bad is not None:  # NaN scores rank nothing: a failure, never a top-k
            raise NonFiniteError(f"{Path(config.model).name} gives {bad.count} non-finite score(s) (NaN/Inf) for {path}",
                                 hint="the model is broken for this input; check its weights and the preprocessing")
        probs, kind = as_probabilities(scores)
        n = probs.shape[1]
        if names is not None and len(names) != n:
            raise CnnkitError(f"{config.model} has {n} outputs but {len(names)} class names ({names_from})",
                              hint="pass --labels FILE with one name per output")
        order = ranking(probs)[0, : config.top_k]
        top = tuple(ClassScore(int(i), names[i] if names else str(int(i)), float(probs[0, i])) for i in order)
        seen = brightness(px)
        warning = inversion_warning(str(path), seen, reference)
        predictions.append(ImagePrediction(str(path), top, seen, (warning,) if warning else ()))
    return PredictResult(
        SCHEMA, str(config.model), info.sha256, record.to_dict(), names_from or "class indices (the model names none)",
        {"name": runner.output_names[0], "kind": kind}, reference, runner.info.provider_record(), tuple(predictions),
        (note,) if note else (),
    )
