"""Numerical parity: is the exported model the same model?

Two runners (Keras and ONNX Runtime, or two ONNX models) get the same inputs — real images from a dataset,
seeded random images, and edge cases (all 0, all 255, noisy images) — at several batch sizes, one of them
odd, which also proves the batch dimension is dynamic. Every output is checked and every verdict logged,
then one result lists all failures. When Keras and ONNX disagree, each Keras layer's output is compared
with the matching intermediate ONNX tensor and the first layer that diverges is named.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.data.datasets import Dataset
from cnnkit.data.folders import SkippedImages
from cnnkit.data.preprocess import (
    PreprocessChoice,
    PreprocessRecord,
    guessed_raw_pixels,
    record_for_model,
    resolve_record,
)
from cnnkit.data.sources import ImageSource, model_class_names, open_images
from cnnkit.envinfo import environment
from cnnkit.errors import CnnkitError, ParityError, shorten
from cnnkit.finite import require_finite
from cnnkit.graph import metadata as meta
from cnnkit.parity.compare import OutputDiff, compare_outputs
from cnnkit.parity.inputs import InputSet, make_inputs
from cnnkit.parity.layers import LAYER_TABLE_MAX_SAMPLES, LayerDiff, localize_divergence
from cnnkit.parity.rounding import rounding_floor
from cnnkit.parity.stability import constant_outputs_failure, output_spread, reference_stability
from cnnkit.parity.tolerance import (
    Tolerance,
    gate_for_precision,
    same_model_tolerance,
    variant_tolerance,
    widen_for_rounding,
)
from cnnkit.runtimes.base import Runner, run_batched
from cnnkit.runtimes.registry import DEFAULT_RUNTIME, RuntimeChoice, create_runner
from cnnkit.runtimes.sessions import SessionConfig


log = logging.getLogger(__name__)
KERAS = RuntimeChoice("keras")  # the reference of keras-onnx parity

SCHEMA = "cnnkit.parity/1"
DEFAULT_BATCH_SIZES = (1, 7, 64)


@dataclass(frozen=True)
class ParityConfig:
    """Compare ``reference`` (.keras or .onnx) with ``candidate`` (.onnx). Defaults: 200 dataset images,
    batch sizes 1, 7, 64, the tolerances declared above for the pair's kind, CPU."""

    reference: Path
    candidate: Path
    dataset: str | None = None  # None: the default dataset (unlabelled unless the model names it); "none": no dataset
    data_dir: Path | None = None  # dataset files, or a folder of images (class subfolders: labelled)
    samples: int = 200
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    atol: float | None = None  # None: the default for the pair
    rtol: float | None = None
    min_agreement: float | None = None
    max_accuracy_drop: float | None = None
    session: SessionConfig = field(default_factory=SessionConfig)
    seed: int = 0
    layers: bool = False  # per-layer table even on a pass
    runtime: RuntimeChoice = DEFAULT_RUNTIME  # what runs the candidate: onnxruntime, openvino[:bf16], litert (its .tflite)
    tflite: Path | None = None  # LiteRT's model; default: the .tflite beside the candidate
    preprocess: PreprocessChoice | None = None  # None: the candidate's own record (its metadata), else raw pixels
    skip_bad_images: bool = False
    labels_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b <= 0 for b in self.batch_sizes):
            raise CnnkitError(f"--batch-sizes must be positive integers, got {list(self.batch_sizes)}",
                              hint="e.g. --batch-sizes 1,7,64 (the default)")
        if self.samples <= 0:
            raise CnnkitError(f"--samples must be positive, got {self.samples}", hint="dataset images to compare on, e.g. --samples 200 (the default)")
        for name in ("atol", "rtol", "min_agreement", "max_accuracy_drop"):
            require_finite(f"--{name.replace('_', '-')}", getattr(self, name))
        for name in ("atol", "rtol"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise CnnkitError(f"--{name} must be >= 0, got {v}", hint=f"e.g. --{name} 0.001; leave it out for the default")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise CnnkitError(f"--min-agreement must be in [0, 1], got {self.min_agreement}",
                              hint="a share of the inputs, e.g. --min-agreement 0.99")

    @property
    def keras_reference(self) -> bool:
        return Path(self.reference).suffix == ".keras"

    def tolerance(self) -> Tolerance:
        # A bf16 candidate (OpenVINO's bf16 hint) is not the fp32 computation: it is gated like a quantised model.
        reduced = self.runtime.precision == "bf16"
        given = (self.atol, self.rtol, self.min_agreement, self.max_accuracy_drop)
        if self.keras_reference and not reduced:
            return same_model_tolerance(*given)
        return variant_tolerance(*given, bf16=reduced)


@dataclass(frozen=True)
class ParityResult:
    schema: str
    passed: bool
    reference: str
    candidate: str
    mode: str  # "keras-onnx" or "onnx-onnx"
    tolerance: Tolerance
    batch_sizes: tuple[int, ...]
    inputs: dict[str, Any]
    provider: dict[str, Any]
    outputs: tuple[OutputDiff, ...]
    failures: tuple[str, ...]
    layers: tuple[LayerDiff, ...] = ()
    first_divergent_layer: str | None = None
    divergence: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the result") -> ParityResult:
        from cnnkit.results.load import from_dict

        return from_dict(data, source, expect=SCHEMA)


def check_parity(config: ParityConfig, dataset: Dataset | ImageSource | None = None,
                 progress: Callable[[str], None] | None = None) -> ParityResult:
    """Run both models on the same images, each through its preprocessing record, at every batch size and
    compare; localise a Keras/ONNX failure. ``progress`` hears each step that takes seconds as it starts."""
    from cnnkit.graph.info import describe_onnx

    say = progress or (lambda _message: None)
    say(f"loading the candidate {Path(config.candidate).name} ({config.runtime.label})")
    tol = config.tolerance()
    cand_info = describe_onnx(config.candidate, require_image=False)
    candidate = create_runner(config.runtime, config.candidate, config.session, config.tflite)
    if len(cand_info.input_shape) != 4:  # not images (a 1-D signal model): the same raw values to both sides
        return _check_signals(config, cand_info, candidate, tol, dataset)
    cand_info = describe_onnx(config.candidate)
    cand_record, note = record_for_model(cand_info, config.preprocess)
    if not config.keras_reference:
        tol = gate_for_precision(tol, cand_info.precision)
    if config.keras_reference:
        tf = "" if "tensorflow" in sys.modules else ", with TensorFlow"
        say(f"loading the Keras reference {Path(config.reference).name}{tf}")
        reference: Any = create_runner(KERAS, config.reference, names=(candidate.input_name, candidate.output_names))
        kshape = tuple(reference.model.inputs[0].shape[1:])
        if len(kshape) != 3 or any(d is None for d in kshape):
            raise ParityError(f"{config.reference}: input shape {kshape} is not a fixed-size image (height, width, channels)")
        # Keras takes NHWC float32: the candidate's record, laid out for Keras.
        ref_record = resolve_record(config.preprocess, cand_info.metadata)[0].bind(
            int(kshape[0]), int(kshape[1]), int(kshape[2]), "NHWC", "float32")
        mode = "keras-onnx"
    else:
        if Path(config.reference).suffix != ".onnx":
            raise ParityError(f"{config.reference}: the reference must be a .keras or .onnx file")
        reference = create_runner(DEFAULT_RUNTIME, config.reference, config.session)
        ref_record = record_for_model(describe_onnx(config.reference), config.preprocess)[0]
        mode = "onnx-onnx"
    ref_geo = (*ref_record.size, ref_record.channels)
    cand_geo = (*cand_record.size, cand_record.channels)
    if ref_geo != cand_geo:
        raise ParityError(f"input shapes differ: reference takes {'x'.join(map(str, ref_geo))} images, candidate "
                          f"{'x'.join(map(str, cand_geo))} ({cand_record.layout})", hint=_SHAPES_DIFFER_HINT)
    labelled = True
    if dataset is None and config.dataset != "none":
        say("loading the test images")
        dataset, labelled = open_model_images(config.dataset, config.data_dir, config.labels_file, cand_info)
    source = ImageSource.from_dataset(dataset) if isinstance(dataset, Dataset) else dataset
    skipped = SkippedImages() if config.skip_bad_images else None
    inputs = make_inputs(source, cand_record, config.samples, config.seed, labelled and source is not None
                         and source.labelled, skipped)
    return _run_and_compare(config, mode, reference, candidate, cand_info, inputs, ref_record, cand_record, tol,
                            {"preprocess": cand_record.to_dict(), "preprocess_note": note,
                             "skipped_images": skipped.to_dict() if skipped else {"count": 0, "examples": []}}, say)


def open_model_images(dataset: str | None, data_dir: Path | None, labels_file: Path | None,
                      info: Any) -> tuple[ImageSource, bool]:
    """The test images for the model ``info`` describes, and whether their labels are the model's classes (a
    default dataset the model was not trained on still gives real images, but its labels mean nothing there)."""
    from cnnkit.data.datasets import default_data_dir

    names, names_from = model_class_names(info.metadata, labels_file)
    source = open_images(dataset, data_dir, "test", names, names_from, strict_names=labels_file is not None,
                         model=info.path, model_classes=info.classes)
    chosen = dataset is not None or data_dir is not None or default_data_dir() is not None
    return source, source.labelled and (chosen or meta.dataset(info.metadata) == source.name)


_SHAPES_DIFFER_HINT = ("parity compares one model in two forms (a .keras and its export, FP32 and INT8); models that take "
                       "different inputs are different models: compare their accuracy with cnnkit eval REFERENCE CANDIDATE")


def _check_signals(config: ParityConfig, cand_info: Any, candidate: Any, tol: Tolerance,
                   dataset: Dataset | ImageSource | None) -> ParityResult:
    """Parity of models that take something other than images (e.g. Conv1D signals): seeded values 0..255
    of the usual kinds, the same to both sides."""
    shape = tuple(cand_info.input_shape[1:])
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise ParityError(f"{config.candidate}: input shape {list(cand_info.input_shape)} has open dimensions besides the batch")
    if dataset is not None or config.data_dir is not None or config.dataset not in (None, "none"):
        raise ParityError(f"the models take {list(shape)}, not images: no dataset can feed them",
                          hint="drop --dataset/--data-dir; parity uses random and edge-case inputs")
    if config.keras_reference:
        reference: Any = create_runner(KERAS, config.reference, names=(candidate.input_name, candidate.output_names))
        ref_shape = tuple(reference.model.inputs[0].shape[1:])
        mode = "keras-onnx"
    else:
        reference = create_runner(DEFAULT_RUNTIME, config.reference, config.session)
        ref_shape = tuple(reference.input_shape[1:])
        mode = "onnx-onnx"
    if tuple(ref_shape) != shape:
        raise ParityError(f"input shapes differ: reference takes {list(ref_shape)}, candidate {list(shape)}",
                          hint=_SHAPES_DIFFER_HINT)
    inputs = make_inputs(None, None, config.samples, config.seed, shape=shape)
    return _run_and_compare(config, mode, reference, candidate, cand_info, inputs, None, None, tol, {"preprocess": None})


def _run_and_compare(config: ParityConfig, mode: str, reference: Runner, candidate: Runner, cand_info: Any,
                     inputs: InputSet, ref_record: PreprocessRecord | None, cand_record: PreprocessRecord | None,
                     tol: Tolerance, described: dict[str, Any],
                     say: Callable[[str], None] = lambda _message: None) -> ParityResult:
    """Run both sides at every batch size, compare, and localise a Keras/ONNX failure layer by layer."""
    say(f"running the reference on {len(inputs)} inputs")
    ref_out = run_batched(reference, inputs.feed(ref_record), 64)
    cand_x = inputs.feed(cand_record)
    batch_sizes, batch_note = accepted_batch_sizes(config.batch_sizes, candidate.label, cand_info.input, reference)
    on_ort = candidate.info.runtime == "onnxruntime"  # the rounding floor and layer table run the .onnx in ORT
    floor = None
    if mode == "keras-onnx" and config.atol is None and on_ort:
        floor, _ = rounding_floor(Path(config.candidate), cand_x, config.session)
        tol = widen_for_rounding(tol, floor)
    constant = constant_outputs_failure(ref_out, tol, len(inputs), mode == "keras-onnx", ref_record)
    # ONNX vs ONNX gates a reduced-precision candidate on top-1 agreement: say how stable the reference's own
    # top-1 is, so a failure can tell a bad variant from a reference with no stable decisions.
    stability = reference_stability(reference, inputs, ref_record, ref_out, config.seed) if mode == "onnx-onnx" else None
    diffs: list[OutputDiff] = []
    for b in batch_sizes:
        say(f"running the candidate at batch {b}")
        diffs += compare_outputs(ref_out, run_batched(candidate, cand_x, b), tol, b, inputs, stability,
                                 guessed_raw_pixels(ref_record))
    failures = tuple(([constant] if constant else []) + [f for d in diffs for f in d.failures])
    passed = not failures

    rows: list[LayerDiff] = []
    first = why = None
    if mode == "keras-onnx" and (not passed or config.layers) and on_ort:  # the layer table runs the .onnx in ORT
        worst = sorted({d.worst_index for d in diffs if d.worst_index >= 0})[:LAYER_TABLE_MAX_SAMPLES] or [0]
        say("comparing layer by layer")
        try:
            rows, first, why = localize_divergence(reference, Path(config.candidate), inputs.feed(ref_record, worst),
                                                   config.session, x_onnx=inputs.feed(cand_record, worst))
        except Exception as exc:  # noqa: BLE001 (a diagnostic: the verdict above stands without it)
            log.debug("per-layer comparison failed", exc_info=True)
            why = f"per-layer comparison not available: {type(exc).__name__}: {shorten(exc, 200)}"
    return ParityResult(
        schema=SCHEMA, passed=passed, reference=str(config.reference), candidate=str(config.candidate), mode=mode,
        tolerance=tol, batch_sizes=tuple(batch_sizes),
        inputs={"counts": inputs.counts(), "dataset": inputs.dataset, "seed": config.seed, "total": len(inputs),
                **described, "output_spread": output_spread(ref_out), "rounding_floor": floor,
                "candidate_input": cand_info.input.to_dict() if getattr(cand_info, "input", None) is not None else None}
        | ({"batch_note": batch_note} if batch_note else {}),
        provider=candidate.info.provider_record()
        # A precision asked for (openvino:bf16) is stated as the one that really ran; the model's own is in the .onnx.
        | ({"precision": candidate.info.precision} if config.runtime.precision != "model" else {})
        | {"runtime": candidate.info.runtime}, outputs=tuple(diffs), failures=failures, layers=tuple(rows),
        first_divergent_layer=first, divergence=why, environment=environment(),
    )


def accepted_batch_sizes(wanted: tuple[int, ...], label: str, candidate: Any,
                          reference: Any) -> tuple[tuple[int, ...], str | None]:
    """The candidate's batch sizes: a fixed-batch candidate runs at its own batch only (and the note says so).

    ``candidate``: its :class:`~cnnkit.graph.info.ImageInput`. Either runner takes any number of images (ONNX
    Runtime runs a fixed-batch model a batch at a time), so only the candidate's own batch is what a batch
    size in the result means.
    """
    notes = []
    sizes = tuple(wanted)
    if candidate is not None and candidate.batch is not None:
        b = candidate.batch
        skipped = [w for w in wanted if w != b]
        sizes = (b,)
        notes.append(f"{label} has a fixed batch of {b}: compared at batch {b} only"
                     + (f" (skipped {', '.join(map(str, skipped))})" if skipped else ""))
    ref_image = getattr(reference, "image", None)
    if ref_image is not None and ref_image.batch is not None:
        notes.append(f"the reference {reference.label} has a fixed batch of {ref_image.batch} and runs "
                     f"{ref_image.batch} image(s) at a time")
    note = "; ".join(notes) or None
    if note:
        log.info(note)
    return sizes, note
