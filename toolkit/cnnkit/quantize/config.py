"""What quantize is asked (:class:`QuantizeConfig`) and what it answers (:class:`QuantizeResult`, and for
``--auto`` :class:`AutoResult`): the schemas the result loader reads back."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.choices import (
    ActivationType,
    CalibrationMethod,
    QuantFix,
    QuantFormat,
    QuantMode,
    check_engine,
)
from cnnkit.data.preprocess import PreprocessChoice
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.accuracy import accuracy_change_pp
from cnnkit.finite import require_finite
from cnnkit.runtimes.sessions import SessionConfig

SCHEMA = "cnnkit.quantize/1"


class QuantizeError(CnnkitError):
    """A model that cannot be quantized as asked, or a variant that cannot meet its accuracy budget."""


@dataclass(frozen=True)
class QuantizeConfig:
    """Defaults: static QDQ, uint8 activations, int8 weights, min-max calibration on 256 training images,
    per-tensor weights, accuracy budget 0.1 points on the whole test split, up to 8 rebuilds trying every fix
    (cheapest first), within 5 minutes."""

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
    fixes: tuple[QuantFix, ...] = tuple(QuantFix)  # what a rebuild may try, always in QuantFix's order
    max_time_s: float = 300.0  # no step starts that would end past it; then the best so far, or a refusal
    explain: bool = False  # per blamed node: weight SQNR per tensor and per channel, activation SQNR, the fix

    def __post_init__(self) -> None:
        check_engine(self.engine)
        require_finite("--max-accuracy-drop", self.max_accuracy_drop)
        if self.calibration_samples <= 0:
            raise CnnkitError(f"--calibration-samples must be positive, got {self.calibration_samples}",
                              hint="static INT8 needs images to measure value ranges on, e.g. --calibration-samples 256 (the default)")
        if self.max_attempts < 0:
            raise CnnkitError(f"--max-attempts must be >= 0, got {self.max_attempts}", hint="e.g. --max-attempts 8 (the default); 0: no rebuilds")
        if not (math.isfinite(self.max_time_s) and self.max_time_s > 0):
            raise CnnkitError(f"--max-time must be a positive number of seconds, got {self.max_time_s}",
                              hint="e.g. --max-time 300 (the default, 5 minutes)")
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
class Recipe:
    """How one variant is built, beyond its config: the fixes the loop applied."""

    per_channel: bool
    calibration_method: CalibrationMethod
    per_channel_weights: tuple[str, ...] = ()  # weights quantized per channel by override (per_channel False)
    activations_16bit: tuple[str, ...] = ()  # activation tensors kept at 16 bits (QDQ overrides)
    excluded_nodes: tuple[str, ...] = ()  # nodes kept in float

    def to_dict(self) -> dict[str, Any]:
        return {"per_channel": self.per_channel, "calibration_method": self.calibration_method.value,
                "per_channel_weights": list(self.per_channel_weights),
                "activations_16bit": list(self.activations_16bit), "excluded_nodes": list(self.excluded_nodes)}


@dataclass(frozen=True)
class Attempt:
    """One build and its check: what it tried and its effect."""

    excluded_nodes: tuple[str, ...]
    accuracy: float | None  # None: no images to check it on
    drop_pp: float | None
    within_budget: bool
    top1_agreement: float | None = None  # with FP32 on the same images (None: not checked)
    step: str = ""  # what this build tried, e.g. "per-channel weights for 2 depthwise convolution(s)"
    kept: bool = True  # False: the fix did not bring the variant closer to its gate, and was undone
    recipe: dict[str, Any] = field(default_factory=dict)  # Recipe.to_dict() of this build
    seconds: float | None = None  # building and checking it
    infer_ms_per_image: float | None = None  # its inference time over the accuracy images (batches of 256)
    error: str | None = None  # the quantizer could not build this fix (so it was skipped); None: it was built


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
    recipe: dict[str, Any] = field(default_factory=dict)  # the final Recipe.to_dict(), also in the metadata
    stopped: str | None = None  # where the time budget (max_time_s) stopped the loop; None: it did not
    explanation: tuple[dict[str, Any], ...] = ()  # with explain: NodeExplanation.to_dict() per blamed node
    slowdown: dict[str, Any] = field(default_factory=dict)  # INT8, timed: SlowdownExplanation.to_dict()

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

