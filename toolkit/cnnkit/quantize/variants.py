"""INT8 and FP16 variants of an FP32 ONNX model, each checked before it is written.

Modes: ``dynamic`` (int8 weights, activations quantized at run time: ConvInteger/MatMulInteger),
``static`` (int8 weights and activations, calibrated on real images — a dataset's *training* split, or a
seeded sample of an image folder kept apart from the images that measure accuracy; never random data — in QDQ
or QOperator format) and ``fp16`` (float16 weights and compute, float32
inputs and outputs kept). Every variant's accuracy on the held-out test split is compared with the FP32
model's (on an unlabelled folder: top-1 agreement with FP32 stands in for accuracy; with no images at all, as
FP16 and dynamic INT8 of a model that names no dataset allow, accuracy is not checked and the result says so);
if it loses more than the budget, the nodes with the largest quantization error are kept in float
(``onnxruntime.quantization.qdq_loss_debug`` for static models, weight error otherwise) and it is built again,
until the budget holds or nothing is left to try.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import cnnkit
from cnnkit.choices import ActivationType, CalibrationMethod, QuantFormat, QuantMode
from cnnkit.data.folders import SkippedImages, is_image_folder
from cnnkit.data.preprocess import PREPROCESS_FIX, PreprocessChoice, PreprocessRecord, guessed_raw_pixels, record_for_model
from cnnkit.data.sources import ImageSource, model_class_names, open_folder
from cnnkit.data.datasets import Dataset, DatasetName, default_data_dir, load_dataset
from cnnkit.envinfo import environment
from cnnkit.errors import CnnkitError, shorten
from cnnkit.evaluate.accuracy import accuracy_change_pp
from cnnkit.finite import require_finite
from cnnkit.graph import metadata as meta
from cnnkit.graph.info import OnnxModelInfo, describe_onnx
from cnnkit.io import atomic_path, check_not_input, check_writable
from cnnkit.runtimes.sessions import SessionConfig

SCHEMA = "cnnkit.quantize/1"
_QUANTIZABLE_OPS = {"Conv", "MatMul", "Gemm"}


class QuantizeError(CnnkitError):
    """A model that cannot be quantized as asked, or a variant that cannot meet its accuracy budget."""


@dataclass(frozen=True)
class QuantizeConfig:
    """Defaults: static QDQ, uint8 activations, int8 weights, min-max calibration on 256 training images,
    per-tensor weights, accuracy budget 0.1 points on the whole test split, up to 8 rebuilds."""

    model: Path
    output: Path
    mode: QuantMode = QuantMode.STATIC
    format: QuantFormat = QuantFormat.QDQ
    activation_type: ActivationType = ActivationType.UINT8
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    per_channel: bool = False
    calibration_samples: int = 256
    dataset: str | None = None
    data_dir: Path | None = None
    max_accuracy_drop: float = 0.1  # percentage points; may be negative (must gain accuracy)
    max_attempts: int = 8
    eval_samples: int | None = None  # None: the whole test split
    exclude_nodes: tuple[str, ...] = ()
    session: SessionConfig = field(default_factory=SessionConfig)
    force: bool = False
    measure_speed: bool = True  # time the variant against FP32 and warn if slower (--auto measures on its own)
    preprocess: PreprocessChoice | None = None  # None: the model's own record (metadata), else raw pixels
    skip_bad_images: bool = False
    labels_file: Path | None = None
    keep_failed: bool = False  # write a variant that fails its gate anyway, marked failed in its metadata
    engine: str = "local"  # ray: the accuracy checks run as a distributed eval (image folders)
    address: str | None = None  # the Ray cluster (engine ray); None: $RAY_ADDRESS, else a local one

    def __post_init__(self) -> None:
        require_finite("--max-accuracy-drop", self.max_accuracy_drop)
        if self.calibration_samples <= 0:
            raise CnnkitError(f"--calibration-samples must be positive, got {self.calibration_samples}",
                              hint="static INT8 needs images to measure value ranges on, e.g. --calibration-samples 256 (the default)")
        if self.max_attempts < 0:
            raise CnnkitError(f"--max-attempts must be >= 0, got {self.max_attempts}", hint="e.g. --max-attempts 8 (the default); 0: no rebuilds")
        if self.eval_samples is not None and self.eval_samples <= 0:
            raise CnnkitError(f"--eval-samples must be positive, got {self.eval_samples}", hint="e.g. --eval-samples 1000; leave it out to use every test image")

    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {"mode": self.mode.value}
        if self.mode is QuantMode.STATIC:
            s |= {"format": self.format.value, "activation_type": self.activation_type.value, "weight_type": "int8",
                  "calibration_method": self.calibration_method.value, "calibration_samples": self.calibration_samples}
        if self.mode is QuantMode.DYNAMIC:
            s |= {"weight_type": "int8"}
        if self.mode is not QuantMode.FP16:
            s |= {"per_channel": self.per_channel}
        else:
            s |= {"keep_io_types": True}
        return s


@dataclass(frozen=True)
class Attempt:
    excluded_nodes: tuple[str, ...]
    accuracy: float | None  # None: no images to check it on
    drop_pp: float | None
    within_budget: bool
    top1_agreement: float | None = None  # with FP32 on the same images (None: not checked)


@dataclass(frozen=True)
class QuantizeResult:
    schema: str
    source: str
    source_sha256: str
    output: str
    settings: dict[str, Any]
    budget_pp: float
    dataset: dict[str, Any]  # provenance, calibration, the metric and the preprocessing record
    fp32_accuracy: float | None  # None: accuracy not checked (no images)
    accuracy: float | None
    drop_pp: float | None
    top1_agreement: float | None
    fp32_size_bytes: int
    size_bytes: int
    excluded_nodes: tuple[str, ...]
    attempts: tuple[Attempt, ...]
    parity: dict[str, Any]  # the ONNX-vs-ONNX figures of ``cnnkit parity``
    environment: dict[str, Any]
    speed: dict[str, Any] = field(default_factory=dict)  # p50 ms of FP32 and variant per batch size, measured
    passed: bool = True  # False only with keep_failed: the variant was written although it failed its gate
    failures: tuple[str, ...] = ()

    @property
    def accuracy_change_pp(self) -> float | None:
        """Accuracy against FP32 in points: negative when the variant is worse (``drop_pp`` is its opposite);
        None when accuracy was not checked."""
        if self.accuracy is None or self.fp32_accuracy is None:
            return None
        return accuracy_change_pp(self.fp32_accuracy, self.accuracy)

    @property
    def speed_warning(self) -> str | None:
        """Said when the variant is slower than FP32 here: quantization is measured, not assumed faster."""
        slower = {b: r for b, r in self.speed.get("ratio", {}).items() if r > 1.05}
        if not slower:
            return None
        worst = max(slower, key=lambda b: slower[b])
        return (f"this variant is {slower[worst]:.1f}x slower than FP32 at batch {worst} on "
                f"{self.speed.get('provider')} (measured, interleaved); it saves size, not time, here")

    @property
    def size_ratio(self) -> float:
        return self.fp32_size_bytes / self.size_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"size_ratio": self.size_ratio, "speed_warning": self.speed_warning}


def size_change(ratio: float) -> str:
    """FP32's size over the variant's, in words: "3.90x smaller", or "4.76x larger" (a tiny model's INT8 variant
    carries more in scales and Q/DQ nodes than it saves in weights)."""
    return f"{ratio:.2f}x smaller" if ratio >= 1 else f"{1 / ratio:.2f}x larger"


def metric_name(dataset: dict[str, Any]) -> str:
    """What a quantize result's "accuracy" figures are: accuracy, or on unlabelled images top-1 agreement with FP32."""
    return "top-1 agreement with FP32" if str(dataset.get("metric", "")).startswith("top-1 agreement") else "accuracy"


# --- building variants --------------------------------------------------------------------------------


class _ImageReader:
    """onnxruntime's CalibrationDataReader over real images, in batches."""

    def __init__(self, input_name: str, images: np.ndarray, fixed_batch: int | None = None):
        """Equal batches of at most 32 images (the largest such divisor of their number: the histogram
        calibrators stack batches, and fail on a short last one), or of the model's ``fixed_batch`` (a short
        last one padded with its own images)."""
        self.input_name = input_name
        size = fixed_batch or max(d for d in range(1, min(32, max(len(images), 1)) + 1) if len(images) % d == 0)
        self.batches = [images[i : i + size] for i in range(0, len(images), size)]
        if fixed_batch and self.batches and len(self.batches[-1]) < fixed_batch:
            self.batches[-1] = np.resize(self.batches[-1], (fixed_batch, *self.batches[-1].shape[1:]))
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {self.input_name: self.batches[self.index - 1]}

    def __iter__(self) -> _ImageReader:  # qdq_loss_debug iterates where the quantizer calls get_next
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _model_batch(model: Path) -> int | None:
    """The model's fixed batch (calibration batches must have it), None where the batch is dynamic."""
    from cnnkit.graph.info import image_input, load_onnx

    try:
        return image_input(load_onnx(model), str(model)).batch
    except CnnkitError:
        return None


@dataclass(frozen=True, eq=False)
class QuantData:
    """The images quantization uses, fitted by the model's preprocessing record: calibration images (model-ready,
    in memory) and the images that measure accuracy (streamed); either may be absent."""

    record: PreprocessRecord
    calibration: np.ndarray | None
    evaluation: ImageSource | None
    provenance: dict[str, Any]
    notes: tuple[str, ...] = ()
    skipped: SkippedImages | None = None

    @property
    def labelled(self) -> bool:
        return self.evaluation is not None and self.evaluation.labelled

    @property
    def metric(self) -> str:
        if self.evaluation is None:
            return "none (no images: accuracy not checked)"
        return "accuracy" if self.labelled else "top-1 agreement with FP32 (unlabelled images)"


def _model_dataset(info: OnnxModelInfo) -> str | None:
    name = meta.dataset(info.metadata)
    return name if name in {d.value for d in DatasetName} else None


def prepare_quant_data(config: QuantizeConfig, info: OnnxModelInfo, dataset: Dataset | QuantData | None = None
                       ) -> QuantData:
    """Calibration and evaluation images for ``config``: an image folder (``--data-dir``), the dataset given, or
    the one the model's metadata names — a ``--dataset`` that differs from it is an error, never a silent swap."""
    if isinstance(dataset, QuantData):
        return dataset
    record, note = record_for_model(info, config.preprocess)
    notes = [note] if note else []
    static = config.mode is QuantMode.STATIC
    model = Path(config.model).name
    where = Path(config.data_dir) if config.data_dir is not None else default_data_dir()
    if isinstance(dataset, Dataset):
        calib_src, eval_src = ImageSource.from_dataset(dataset, "train"), ImageSource.from_dataset(dataset, "test")
        how = "the dataset's training split"
        held_out: bool | None = True
    elif where is not None and is_image_folder(where):
        if config.dataset is not None:
            raise QuantizeError(f"--dataset {config.dataset} and --data-dir {where} (a folder of images) disagree",
                                hint="give one of them: an image folder needs no --dataset")
        names, names_from = model_class_names(info.metadata, config.labels_file)
        folder = ImageSource.from_folder(open_folder(where, names, names_from, config.labels_file is not None,
                                                     info.classes))
        if folder.notice:
            notes.append(folder.notice)
        n = len(folder)
        k = min(config.calibration_samples, n)
        order = np.random.default_rng(0).permutation(n)
        calib_src = folder.subset(np.sort(order[:k]))
        if not static:  # nothing is calibrated: every image measures accuracy
            eval_src, how, held_out = folder, "", None
        elif n > k:
            eval_src = folder.subset(np.sort(order[k:]))
            how = f"{k:,} images of {where} drawn with seed 0; the other {n - k:,} measure accuracy"
            held_out = True
        else:
            eval_src = folder
            how = f"all {n:,} images of {where}"
            held_out = False
            notes.append(f"{where} holds {n:,} images, not more than --calibration-samples {config.calibration_samples}: "
                         f"accuracy is measured on the calibration images themselves (none is held out)")
    else:
        trained_on = _model_dataset(info)
        if config.dataset is not None and trained_on is not None and config.dataset != trained_on:
            raise QuantizeError(
                f"{model} was trained on {trained_on} (its metadata says so), not on --dataset {config.dataset}",
                hint=f"calibrate on {trained_on} (--dataset {trained_on}), or on a folder of the model's own images (--data-dir DIR)")
        name = config.dataset or (trained_on if where is None or trained_on != DatasetName.DIGITS.value else None)
        if name is None and where is None:
            if static:
                raise QuantizeError(
                    f"static INT8 calibrates on real images, and {model} names no dataset it was trained on",
                    hint="pass --data-dir DIR with a folder of the model's images (class subfolders also check "
                         "accuracy), or --dataset; or use --mode fp16 or dynamic, which need none")
            notes.append(f"{model} names no dataset and none was given: {config.mode.value} variant built without "
                         f"an accuracy check (pass --data-dir DIR with labelled images to check it)")
            return QuantData(record, None, None, {"name": None, "calibration": None}, tuple(notes))
        ds = load_dataset(name, config.data_dir, require_train=static)
        if ds.notice:
            notes.append(ds.notice)
        calib_src, eval_src = ImageSource.from_dataset(ds, "train"), ImageSource.from_dataset(ds, "test")
        how = "the dataset's training split"
        held_out = True  # the test split
    skipped = SkippedImages() if config.skip_bad_images else None
    calib = None
    if static:
        if len(calib_src) == 0:
            raise QuantizeError(
                f"{calib_src.provenance.get('name')} from {calib_src.provenance.get('source')} has no training images "
                f"to calibrate on",
                hint="static quantization calibrates on the training split: give --data-dir with train-* files, or a "
                     "folder of images")
        pixels, _ = calib_src.head(config.calibration_samples).load(record, skipped)
        if len(pixels) == 0:
            raise QuantizeError(f"no readable calibration image in {calib_src.provenance.get('source')}")
        batch = info.input.batch if info.input is not None else None
        if batch is not None and len(pixels) >= batch:
            pixels = pixels[: len(pixels) - len(pixels) % batch]  # whole batches only: the model takes no other size
        calib = record.normalize(pixels)
    eval_src = eval_src.take(config.eval_samples)
    # held_out: no accuracy image was calibrated on, nor trained on if a split says so (None: a folder, not calibrated).
    provenance = eval_src.describe() | {"calibration": how if static else None,
                                        "calibration_samples": 0 if calib is None else int(len(calib)),
                                        "held_out": held_out}
    return QuantData(record, calib, eval_src, provenance, tuple(notes), skipped)


def _gate_error(what: str, detail: str, record: PreprocessRecord, hint: str) -> QuantizeError:
    """A failed gate: ``what`` failed, then ``detail``. Where the model was fed raw pixels only because it names
    no preprocessing, that comes first, before the figures: it is the likeliest cause, and no --mode fixes it."""
    guess = guessed_raw_pixels(record)
    if guess is None:
        return QuantizeError(f"{what}: {detail}", hint=hint)
    return QuantizeError(f"{what}, most likely because {guess}: {detail}", hint=f"{PREPROCESS_FIX}; else {hint}")


def _ort_quant() -> Any:
    from cnnkit._deps import require_onnxruntime

    require_onnxruntime()
    import onnxruntime.quantization as q

    return q


def preprocess(model: Path, out: Path) -> Path:
    """``quant_pre_process``: symbolic shape inference and graph optimisation before quantization."""
    _ort_quant()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet():
            quant_pre_process(str(model), str(out), skip_symbolic_shape=False)
    except Exception as exc:  # noqa: BLE001
        raise QuantizeError(f"{model}: quantization pre-processing failed: {shorten(exc, 200)}") from None
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantizer logs warnings and prints tensor protos; keep them out of the user's terminal."""
    from cnnkit._deps import capture_native_stderr

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with capture_native_stderr(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def build_variant(source: Path, out: Path, config: QuantizeConfig, calib: np.ndarray | None, input_name: str,
                  excluded: list[str]) -> None:
    """Write one variant of ``source`` (already pre-processed for INT8) to ``out``."""
    with _quiet():
        _build_variant(source, out, config, calib, input_name, excluded)


def _build_variant(source: Path, out: Path, config: QuantizeConfig, calib: np.ndarray | None, input_name: str,
                   excluded: list[str]) -> None:
    import onnx

    if config.mode is QuantMode.FP16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load(str(source))
        converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=list(excluded) or None)
        onnx.save(converted, str(out))
        return
    q = _ort_quant()
    try:
        if config.mode is QuantMode.DYNAMIC:
            q.quantize_dynamic(str(source), str(out), weight_type=q.QuantType.QInt8, per_channel=config.per_channel,
                               nodes_to_exclude=list(excluded))
            return
        assert calib is not None
        q.quantize_static(
            str(source), str(out), _ImageReader(input_name, calib, _model_batch(source)),
            quant_format=q.QuantFormat.QDQ if config.format is QuantFormat.QDQ else q.QuantFormat.QOperator,
            activation_type=q.QuantType.QUInt8 if config.activation_type is ActivationType.UINT8 else q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8, per_channel=config.per_channel,
            calibrate_method={CalibrationMethod.MINMAX: q.CalibrationMethod.MinMax,
                              CalibrationMethod.ENTROPY: q.CalibrationMethod.Entropy,
                              CalibrationMethod.PERCENTILE: q.CalibrationMethod.Percentile}[config.calibration_method],
            nodes_to_exclude=list(excluded),
        )
    except Exception as exc:  # noqa: BLE001 (the quantizer raises many kinds)
        raise QuantizeError(f"{config.model}: onnxruntime's quantizer failed: {type(exc).__name__}: "
                            f"{shorten(exc, 200)}") from None


# --- which nodes hurt -----------------------------------------------------------------------------


def rank_nodes_by_error(float_model: Path, variant: Path, config: QuantizeConfig, calib: np.ndarray | None,
                        input_name: str, excluded: list[str], work: Path) -> list[tuple[str, str]]:
    """Nodes still quantized, worst first, each with why: ``(node name, explanation)``.

    Static models: ``qdq_loss_debug`` gives, per tensor, the SQNR of the quantized model's value against the
    float model's; a node is blamed for how far that SQNR falls from its inputs to its output, so the error is
    pinned where it arises rather than where it has accumulated. Measured on calibration images (training
    split): the test images only ever measure accuracy. Other modes, and nodes the debugger could not match:
    the quantization SQNR of the node's weights.
    """
    import onnx

    from cnnkit.graph.index import GraphIndex

    model = onnx.load(str(float_model))
    index = GraphIndex.of(model)
    inits = index.initializers
    ranked: list[tuple[float, tuple[str, ...], str]] = []  # (badness, nodes, why); higher badness is worse
    if config.mode is QuantMode.STATIC and calib is not None:
        from onnxruntime.quantization import qdq_loss_debug as dbg

        qdq = variant
        if config.format is QuantFormat.QOPERATOR:  # the debugger reads QDQ graphs: build the QDQ twin
            qdq = work / "qdq-twin.onnx"
            build_variant(float_model, qdq, dataclasses.replace(config, format=QuantFormat.QDQ), calib, input_name, excluded)
        aug_float, aug_qdq = work / "aug-float.onnx", work / "aug-qdq.onnx"
        batch = _model_batch(float_model)
        sample = calib[:64]
        with _quiet():
            dbg.modify_model_output_intermediate_tensors(str(float_model), str(aug_float))
            dbg.modify_model_output_intermediate_tensors(str(qdq), str(aug_qdq))
            float_acts = dbg.collect_activations(str(aug_float), _ImageReader(input_name, sample, batch))
            qdq_acts = dbg.collect_activations(str(aug_qdq), _ImageReader(input_name, sample, batch))
            errors = dbg.compute_activation_error(dbg.create_activation_matching(qdq_acts, float_acts))
        sqnr = {t: float(e["xmodel_err"]) for t, e in errors.items() if "xmodel_err" in e}
        for tensor, out_sqnr in sqnr.items():
            segment, upstream = _segment_to_measured(tensor, index.producers, sqnr, input_name, max(sqnr.values()))
            segment = [n for n in segment if n.name and n.name not in excluded]
            if not segment or not upstream:
                continue
            fall = min(upstream) - out_sqnr
            names = ", ".join(n.name for n in segment)
            ranked.append((fall, tuple(n.name for n in segment), f"SQNR falls {fall:.1f} dB across {names}, to {out_sqnr:.1f} dB"))
    for node in index.nodes:
        if node.op_type in _QUANTIZABLE_OPS and node.name not in excluded:
            w = _weight_sqnr(node, inits, fp16=config.mode is QuantMode.FP16, per_channel=config.per_channel)
            if np.isfinite(w):
                # A weight SQNR of 30 dB costs about what a 30 dB activation fall would.
                ranked.append((30.0 - w, (node.name,), f"worst-channel weight SQNR {w:.1f} dB in {node.name}"))
    ranked.sort(key=lambda r: -r[0])
    return [(names, why) for _, names, why in ranked]


def _segment_to_measured(tensor: str, producers: dict[str, Any], measured: dict[str, float],
                         graph_input: str, input_sqnr: float) -> tuple[list[Any], list[float]]:
    """The nodes between ``tensor`` and the nearest measured tensors upstream, and those tensors' SQNRs.

    Quantized graphs fuse (Conv+Relu), so a conv's own output is not measured: its error shows at the next
    measured tensor, and the whole segment is to blame.
    """
    segment: list[Any] = []
    upstream: list[float] = []
    stack, seen = [tensor], set()
    while stack:
        t = stack.pop()
        node = producers.get(t)
        if node is None or id(node) in seen:
            if t == graph_input and t not in measured:
                upstream.append(input_sqnr)  # an unmeasured graph input: as good as the best measured tensor
            continue
        seen.add(id(node))
        segment.append(node)
        for i in node.input:
            if i in measured:
                upstream.append(measured[i])
            elif i in producers or i == graph_input:
                stack.append(i)
    return segment, upstream


def _weight_sqnr(node: Any, inits: dict[str, Any], fp16: bool, per_channel: bool = False) -> float:
    """Worst output channel's SQNR (dB) of the node's weights after quantization (int8 symmetric, per tensor
    unless ``per_channel``; or float16). Whole-tensor SQNR would hide an outlier channel."""
    from onnx import numpy_helper

    weights = [numpy_helper.to_array(inits[i]) for i in node.input[1:2] if i in inits]
    if not weights or weights[0].ndim < 2:
        return float("inf")
    w = weights[0].astype(np.float64)
    # Output channels: axis 0 for Conv (OIHW), the last axis for MatMul/Gemm (K x N).
    w = w if node.op_type == "Conv" else np.moveaxis(w, -1, 0)
    if fp16:
        deq = w.astype(np.float16).astype(np.float64)
    else:
        axes = tuple(range(1, w.ndim))
        peak = np.abs(w).max(axis=axes, keepdims=True) if per_channel else np.abs(w).max()
        scale = np.where(peak > 0, peak / 127.0, 1.0)
        deq = np.clip(np.round(w / scale), -127, 127) * scale
    signal = np.sum(w.reshape(len(w), -1) ** 2, axis=1)
    noise = np.sum((w - deq).reshape(len(w), -1) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        per = np.where(noise > 0, 10 * np.log10(np.maximum(signal, 1e-30) / np.maximum(noise, 1e-30)), np.inf)
    return float(per.min())


# --- the whole job --------------------------------------------------------------------------------


DITHERED_IMAGES = 2000  # FP32's top-1 stability is measured on at most this many held-out images


def _predictions(model: Path, data: QuantData, session: SessionConfig,
                 label: str | None = None, config: QuantizeConfig | None = None,
                 dithered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 predictions of ``model`` over the evaluation images (streamed), and their labels (-1: unlabelled);
    on Ray workers with ``config.engine`` ray. NaN or Inf in the scores is a :class:`NonFiniteError` naming
    ``label``, the count and the first image. ``dithered``: the first DITHERED_IMAGES images only, every pixel
    moved within ±½ grey level (seeded; :func:`cnnkit.parity.check.dither`), locally: how stable the model's own top-1 is."""
    from cnnkit.finite import NonFiniteError
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner
    from cnnkit.topk import ScoreTally

    assert data.evaluation is not None
    if config is not None and config.engine == "ray" and not dithered:
        from cnnkit.distributed.ray_eval import predictions_on_ray

        return predictions_on_ray(model, data.evaluation, data.record, session, config.address, data.skipped,
                                  label=label)
    runner = create_runner(DEFAULT_RUNTIME, model, session)
    scores, labels = ScoreTally(), []
    from cnnkit.parity.check import dither

    rng = np.random.default_rng([0, 0x5EED])
    source = data.evaluation.head(DITHERED_IMAGES) if dithered else data.evaluation  # head: aligned with FP32
    for pixels, y in source.batches(data.record, 256, data.skipped):
        if dithered:
            pixels = dither(pixels, rng)
        out = runner.infer({runner.input_name: data.record.normalize(pixels)})
        scores.add(next(iter(out.values())).reshape(len(pixels), -1))
        labels.append(y)
    if scores.bad is not None:
        raise NonFiniteError(f"{label or Path(model).name}: {scores.bad.describe('output value', 'image')}",
                             hint="the model is broken for these inputs; it is not written")
    if not labels:
        raise QuantizeError(f"no readable image in {data.evaluation.provenance.get('source')} to measure accuracy on")
    return scores.predictions(), np.concatenate(labels)


def _score(preds: np.ndarray, labels: np.ndarray, fp32_preds: np.ndarray | None) -> float:
    """Accuracy on labelled images; top-1 agreement with FP32 on unlabelled ones."""
    if (labels >= 0).all():
        return float(np.mean(preds == labels))
    assert fp32_preds is not None
    return float(np.mean(preds == fp32_preds))


def quantize_model(config: QuantizeConfig, dataset: Dataset | QuantData | None = None,
                   progress: Callable[[str], None] | None = None) -> QuantizeResult:
    """Build the variant, check it against the FP32 model, keep worst nodes in float until the budget holds,
    then write it atomically. A variant that fails its gate (the accuracy budget, or parity with FP32) raises
    :class:`QuantizeError` and is not written; with ``keep_failed`` it is written, marked failed in its metadata,
    and the result says ``passed=False``."""
    import onnx

    out = Path(config.output)
    check_not_input(out, config.model)
    check_writable(out, config.force)
    info = describe_onnx(config.model)
    if info.precision != "fp32":
        raise QuantizeError(f"{config.model} is already quantized ({info.precision})",
                            hint="quantize the FP32 model it came from")
    data = prepare_quant_data(config, info, dataset)
    calib = data.calibration
    if config.mode is QuantMode.STATIC and calib is None:
        raise QuantizeError(f"static INT8 of {Path(config.model).name} needs calibration images",
                            hint="pass --data-dir DIR with a folder of the model's images, or --dataset")
    say = progress or (lambda _m: None)
    for line in data.notes:
        say(f"note: {line}")  # e.g. which data stands in: the CLI shows notes as notes

    from cnnkit.parity.check import DITHER_GREY_LEVELS, ONNX_ONNX_MIN_AGREEMENT

    checked = data.evaluation is not None
    fp32_preds = y_eval = None
    fp32_acc: float | None = None
    # The loop aims at the whole gate: the accuracy budget and parity's top-1 agreement with FP32 — unless FP32's
    # own top-1 moves when pixels move by less than a grey level: no variant can keep such a top-1, and keeping
    # nodes in float for it would only end in a model that is mostly float.
    agreement_target: float | None = None
    fp32_stability: float | None = None
    if checked:
        fp32_preds, y_eval = _predictions(Path(config.model), data, config.session, config=config)
        fp32_acc = _score(fp32_preds, y_eval, fp32_preds)
        agreement_target = ONNX_ONNX_MIN_AGREEMENT
        if data.record.dtype not in ("uint8", "int8"):
            moved, _ = _predictions(Path(config.model), data, config.session, dithered=True)
            fp32_stability = float(np.mean(moved == fp32_preds[: len(moved)]))
            if fp32_stability < ONNX_ONNX_MIN_AGREEMENT:
                agreement_target = None
                guess = guessed_raw_pixels(data.record)
                say(f"note: FP32's own top-1 holds on only {100 * fp32_stability:.2f} % of the accuracy images when "
                    f"their pixels move by up to {DITHER_GREY_LEVELS:g} grey level"
                    + (f" (likely cause: {guess}: {PREPROCESS_FIX})" if guess else "") + ": no node is kept in float for top-1 "
                    f"agreement, which such a model cannot be relied on to keep; the loop aims at the accuracy budget "
                    f"(parity with FP32 still gates agreement)")
    with tempfile.TemporaryDirectory(prefix="cnnkit-quantize-") as tmp:
        work = Path(tmp)
        source = Path(config.model)
        if config.mode is not QuantMode.FP16:
            say("pre-processing (quant_pre_process)")
            source = preprocess(source, work / "pre.onnx")
        excluded = list(config.exclude_nodes)
        attempts: list[Attempt] = []
        for attempt in range(config.max_attempts + 1):
            candidate = work / f"variant-{attempt}.onnx"
            say(f"building {config.mode.value} variant" + (f", {len(excluded)} node(s) kept in float" if excluded else ""))
            build_variant(source, candidate, config, calib, info.input_name, excluded)
            if not checked:
                attempts.append(Attempt(tuple(excluded), None, None, True))
                break
            preds, _ = _predictions(candidate, data, config.session, label=f"the {config.mode.value} variant",
                                    config=config)
            acc = _score(preds, y_eval, fp32_preds)
            agree = float(np.mean(preds == fp32_preds))
            drop = -accuracy_change_pp(fp32_acc, acc)
            ok = drop <= config.max_accuracy_drop
            attempts.append(Attempt(tuple(excluded), acc, drop, ok, agree))
            agree_ok = agreement_target is None or agree >= agreement_target
            say(f"{data.metric.split(' (')[0]} {100 * acc:.2f} % vs FP32 {100 * fp32_acc:.2f} %: drop {drop:+.2f} pp "
                f"({'within' if ok else 'over'} the {config.max_accuracy_drop:g} pp budget); top-1 agreement "
                f"{100 * agree:.2f} %" + ("" if agreement_target is None else
                                          f" ({'at or above' if agree_ok else 'below'} {100 * agreement_target:g} %)"))
            if ok and agree_ok:
                break
            if attempt == config.max_attempts:
                break
            ranked = rank_nodes_by_error(source, candidate, config, calib, info.input_name, excluded, work)
            if not ranked:
                break
            worst, why = ranked[0]
            say(f"keeping {', '.join(worst)} in float ({why}; the worst)")
            excluded.extend(worst)
        final = attempts[-1]
        failures: list[str] = []
        if not final.within_budget:
            tried = "; ".join(f"{len(a.excluded_nodes)} in float: drop {a.drop_pp:+.2f} pp" for a in attempts)
            failures.append(f"cannot meet the {config.max_accuracy_drop:g} pp accuracy budget with {config.mode.value} "
                            f"quantization of {Path(config.model).name} (tried: {tried})")
            if not config.keep_failed:
                raise _gate_error(f"cannot meet the {config.max_accuracy_drop:g} pp accuracy budget with {config.mode.value} "
                                  f"quantization of {Path(config.model).name}", f"tried: {tried}; the variant is not written",
                                  data.record, "raise --max-accuracy-drop, try another --mode or --calibration-method, "
                                               "keep FP32, or pass --keep-failed to write it marked as failed")
        from cnnkit.parity.check import ParityConfig, check_parity

        say("checking parity with FP32 (ONNX vs ONNX)")
        # One accuracy budget: parity's accuracy gate is the user's, its top-1 agreement gate parity's default.
        parity = check_parity(ParityConfig(Path(config.model), candidate, samples=200, session=config.session,
                                           preprocess=config.preprocess, dataset=None if checked else "none",
                                           max_accuracy_drop=max(config.max_accuracy_drop, 0.0)),
                              dataset=data.evaluation)
        failures += [f"parity vs FP32: {f}" for f in parity.failures]
        if failures and not config.keep_failed:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise _gate_error(
                f"the {config.mode.value} variant of {Path(config.model).name} fails its gate",
                f"{failures[0]}{more}; the variant is not written", data.record,
                "run cnnkit parity on the two models for every figure, try another --mode, "
                "or pass --keep-failed to write it marked as failed")
        speed_batches = _speed_batches(info, (1, 64))
        say(f"timing the variant against FP32 (batch {' and '.join(map(str, speed_batches))}, interleaved)")
        speed = _measure_speed(Path(config.model), candidate, config.session, speed_batches) if config.measure_speed else {}
        model = onnx.load(str(candidate))
        meta.write(model, {
            meta.QUANTIZED_FROM: Path(config.model).name,
            meta.QUANTIZED_FROM_SHA256: info.sha256,
            meta.QUANTIZATION: json.dumps(config.settings() | {"excluded_nodes": excluded}),
            meta.QUANTIZED_BY: f"cnnkit {cnnkit.__version__}",
            meta.GATE: "failed" if failures else "passed",
            **({meta.GATE_FAILURES: json.dumps(failures)} if failures else {}),
        })
        with atomic_path(out, force=config.force) as tmp_out:
            onnx.save(model, str(tmp_out))
    p_out = parity.outputs[0]
    return QuantizeResult(
        schema=SCHEMA, source=str(config.model), source_sha256=info.sha256, output=str(out),
        settings=config.settings(), budget_pp=config.max_accuracy_drop,
        dataset=data.provenance | {"evaluated_samples": 0 if y_eval is None else int(len(y_eval)), "metric": data.metric,
                                   "accuracy_engine": config.engine, "fp32_top1_stability": fp32_stability,
                                   "preprocess": data.record.to_dict(), "notes": list(data.notes),
                                   "skipped_images": data.skipped.to_dict() if data.skipped else {"count": 0, "examples": []}},
        fp32_accuracy=fp32_acc, accuracy=final.accuracy, drop_pp=final.drop_pp,
        top1_agreement=None if fp32_preds is None else float(np.mean(preds == fp32_preds)), fp32_size_bytes=info.size_bytes,
        size_bytes=out.stat().st_size, excluded_nodes=tuple(excluded), attempts=tuple(attempts),
        parity={"passed": parity.passed, "max_abs": p_out.max_abs, "mean_abs": p_out.mean_abs,
                "top1_agreement": p_out.top1_agreement, "failures": list(parity.failures),
                "reference_top1_stability": p_out.reference_top1_stability,
                "ungated_top1_agreement": p_out.ungated_top1_agreement, "ungated_inputs": p_out.ungated_inputs,
                "tolerance": asdict(parity.tolerance)},
        environment=environment(),
        speed=speed,
        passed=not failures,
        failures=tuple(failures),
    )


def _speed_batches(info: OnnxModelInfo, wanted: tuple[int, ...]) -> tuple[int, ...]:
    """``wanted``, or the model's own batch where it is fixed (it takes no other)."""
    return (info.input.batch,) if info.input is not None and info.input.batch is not None else wanted


def _measure_speed(fp32: Path, variant: Path, session: SessionConfig, batch_sizes: tuple[int, ...] = (1, 64)) -> dict[str, Any]:
    from cnnkit.bench.benchmark import BenchConfig, run_benchmark

    r = run_benchmark(BenchConfig(models=(fp32, variant), batch_sizes=batch_sizes, session=session, min_time_s=0.4,
                                  min_iterations=10, warmup=5))
    p50 = {(c.model, c.batch_size): c.stats.p50_ms for c in r.cases}
    return {
        "provider": r.cases[0].provider["active"],
        "fp32_p50_ms": {b: p50[(str(fp32), b)] for b in batch_sizes},
        "variant_p50_ms": {b: p50[(str(variant), b)] for b in batch_sizes},
        "ratio": {b: p50[(str(variant), b)] / p50[(str(fp32), b)] for b in batch_sizes},
    }


# --- --auto ---------------------------------------------------------------------------------------------

AUTO_SCHEMA = "cnnkit.quantize-auto/1"


@dataclass(frozen=True)
class AutoCandidate:
    name: str
    settings: dict[str, Any]
    accuracy: float | None = None
    drop_pp: float | None = None
    top1_agreement: float | None = None
    size_bytes: int | None = None
    excluded_nodes: tuple[str, ...] = ()
    latency_ms: dict[int, float] = field(default_factory=dict)  # batch size -> p50
    images_per_s: dict[int, float] = field(default_factory=dict)
    error: str | None = None
    verdict: str = ""


@dataclass(frozen=True)
class AutoResult:
    schema: str
    source: str
    output: str
    chosen: str  # a candidate's name, or "fp32"
    objective_batch: int
    budget_pp: float
    provider: dict[str, Any]
    candidates: tuple[AutoCandidate, ...]
    summary: str
    environment: dict[str, Any]
    dataset: dict[str, Any] = field(default_factory=dict)  # provenance of the calibration and test data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def auto_candidates(base: QuantizeConfig, device: str, isa: list[str]) -> list[tuple[str, QuantizeConfig]]:
    """The variants worth trying: dynamic, static QDQ/QOperator with sensible types and calibrations, FP16
    (``device``: where the FP32 model runs, a :attr:`cnnkit.runtimes.base.RunnerInfo.device`)."""
    r = dataclasses.replace
    static = r(base, mode=QuantMode.STATIC)
    out = [
        ("dynamic-int8", r(base, mode=QuantMode.DYNAMIC)),
        ("static-qdq-u8s8-minmax", static),
        ("static-qdq-u8s8-minmax-perchannel", r(static, per_channel=True)),
        ("static-qdq-s8s8-minmax", r(static, activation_type=ActivationType.INT8)),
        ("static-qdq-u8s8-entropy", r(static, calibration_method=CalibrationMethod.ENTROPY)),
        ("static-qoperator-u8s8-minmax", r(static, format=QuantFormat.QOPERATOR)),
    ]
    # FP16 pays only where the device has fast FP16 kernels: accelerators, or CPUs with AVX-512 FP16.
    if device != "cpu" or "avx512_fp16" in isa:
        out.append(("fp16", r(base, mode=QuantMode.FP16)))
    return out


def auto_quantize(base: QuantizeConfig, batch_sizes: tuple[int, int] = (1, 64), min_time_s: float = 0.5,
                  progress: Callable[[str], None] | None = None, dataset: Dataset | QuantData | None = None) -> AutoResult:
    """Build every candidate, evaluate and benchmark it with the FP32 model, save the fastest within budget."""
    import shutil

    from cnnkit.bench.benchmark import BenchConfig, run_benchmark
    from cnnkit.envinfo import cpu_info
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner

    out = Path(base.output)
    check_not_input(out, base.model)
    check_writable(out, base.force)
    info = describe_onnx(base.model)
    if info.precision != "fp32":
        raise QuantizeError(f"{base.model} is already quantized ({info.precision})", hint="quantize the FP32 model")
    ran = create_runner(DEFAULT_RUNTIME, base.model, base.session).info  # where the FP32 model really runs
    try:  # the images once, for every candidate: with calibration images where there are any
        data = prepare_quant_data(dataclasses.replace(base, mode=QuantMode.STATIC), info, dataset)
    except QuantizeError as exc:
        if "names no dataset" not in exc.message:
            raise
        data = prepare_quant_data(dataclasses.replace(base, mode=QuantMode.FP16), info, dataset)
    say = progress or (lambda _m: None)
    for line in data.notes:
        say(f"note: {line}")
    batch_sizes = _speed_batches(info, batch_sizes)
    objective = batch_sizes[-1]
    with tempfile.TemporaryDirectory(prefix="cnnkit-auto-") as tmp:
        work = Path(tmp)
        built: list[tuple[str, QuantizeConfig, QuantizeResult | None, str | None]] = []
        for name, cfg in auto_candidates(base, ran.device, cpu_info()["isa"]):
            say(f"candidate {name}")
            cfg = dataclasses.replace(cfg, output=work / f"{name}.onnx", force=True, max_attempts=min(base.max_attempts, 3),
                                      measure_speed=False, keep_failed=False)
            try:
                built.append((name, cfg, quantize_model(cfg, data), None))
            except CnnkitError as exc:
                built.append((name, cfg, None, exc.one_line()))
        models = [Path(base.model)] + [Path(cfg.output) for _, cfg, res, _ in built if res is not None]
        say(f"benchmarking {len(models)} models at batch sizes {batch_sizes}")
        bench = run_benchmark(BenchConfig(models=tuple(models), batch_sizes=batch_sizes, session=base.session,
                                          min_time_s=min_time_s, min_iterations=20, warmup=10))
        lat = {(c.model, c.batch_size): c.stats for c in bench.cases}
        rounds = {(c.model, c.batch_size): c.round_p50_ms for c in bench.cases}  # the same interleaved rounds
        fp32_lat = {b: lat[(str(base.model), b)].p50_ms for b in batch_sizes}
        fp32_acc = next((res.fp32_accuracy for _, _, res, _ in built if res is not None), None)
        cands = [AutoCandidate("fp32", {"mode": "none"}, fp32_acc, 0.0, 1.0, info.size_bytes, (),
                               fp32_lat, {b: lat[(str(base.model), b)].images_per_s for b in batch_sizes})]
        for name, cfg, res, err in built:
            if res is None:
                cands.append(AutoCandidate(name, cfg.settings(), error=err, verdict=f"failed: {err}"))
                continue
            key = str(cfg.output)
            cands.append(AutoCandidate(name, res.settings, res.accuracy, res.drop_pp, res.top1_agreement, res.size_bytes,
                                       res.excluded_nodes, {b: lat[(key, b)].p50_ms for b in batch_sizes},
                                       {b: lat[(key, b)].images_per_s for b in batch_sizes}))
        usable = [c for c in cands[1:] if c.error is None]
        # Faster only when the rounds confirm it: the 95 % bootstrap interval of the paired latency ratio lies below 1.
        from cnnkit.stats import ratio_interval

        fp32_rounds = rounds[(str(base.model), objective)]
        confirmed = {}
        for c, (_, cfg, _, _) in zip(cands[1:], built, strict=True):
            if c.error is None:
                confirmed[c.name] = ratio_interval(fp32_rounds, rounds[(str(cfg.output), objective)], paired=True)
        faster = sorted((c for c in usable if confirmed[c.name].confirmed_faster), key=lambda c: c.latency_ms[objective])
        winner = faster[0] if faster else cands[0]
        final = []
        for c in cands:
            if c.error is not None:
                final.append(c)
                continue
            ratio = c.latency_ms[objective] / fp32_lat[objective]
            if c is winner:
                why = ("chosen: fastest within the budget, confirmed by the samples" if c.name != "fp32" else
                       "chosen: no variant within the budget is confirmed faster than FP32 here")
            elif c.name == "fp32":
                why = f"slower than {winner.name}"
            elif ratio >= 1:
                why = f"slower than FP32 at batch {objective} ({ratio:.2f}x its latency)"
            elif not confirmed[c.name].confirmed_faster:
                why = (f"not confirmed faster than FP32 at batch {objective} ({ratio:.2f}x its latency, 95 % interval "
                       f"{confirmed[c.name].low:.2f}-{confirmed[c.name].high:.2f} includes 1)")
            else:
                why = f"slower than {winner.name} at batch {objective} ({c.latency_ms[objective]:.3f} vs {winner.latency_ms[objective]:.3f} ms)"
            if c.excluded_nodes:
                why += f"; {len(c.excluded_nodes)} node(s) kept in float to meet the budget"
            final.append(dataclasses.replace(c, verdict=why))
        if winner.name == "fp32":
            summary = (f"no quantized variant is confirmed faster than FP32 at batch {objective} on {ran.active} "
                       f"within the {base.max_accuracy_drop:g} pp budget: FP32 is kept")
            with atomic_path(out, force=base.force) as tmp_out:
                shutil.copyfile(base.model, tmp_out)
        else:
            summary = (f"{winner.name}: {fp32_lat[objective] / winner.latency_ms[objective]:.2f}x FP32's speed at batch "
                       f"{objective}, " + ("accuracy not checked" if winner.accuracy is None or cands[0].accuracy is None
                                           else f"accuracy {accuracy_change_pp(cands[0].accuracy, winner.accuracy):+.2f} pp "
                                                f"vs FP32 (drop budget {base.max_accuracy_drop:g} pp)"))
            with atomic_path(out, force=base.force) as tmp_out:
                shutil.copyfile(work / f"{winner.name}.onnx", tmp_out)
    return AutoResult(AUTO_SCHEMA, str(base.model), str(out), winner.name, objective, base.max_accuracy_drop,
                      ran.provider_record(), tuple(final), summary, bench.environment, data.provenance | {"metric": data.metric})
