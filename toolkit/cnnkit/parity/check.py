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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.folders import SkippedImages
from cnnkit.data.preprocess import (
    PREPROCESS_FIX,
    PreprocessChoice,
    PreprocessRecord,
    guessed_raw_pixels,
    record_for_model,
    resolve_record,
)
from cnnkit.data.sources import ImageSource, model_class_names, open_images
from cnnkit.data.datasets import Dataset
from cnnkit.envinfo import environment
from cnnkit.errors import CnnkitError, ParityError, shorten
from cnnkit.finite import nonfinite, require_finite
from cnnkit.graph import metadata as meta
from cnnkit.graph.index import GraphIndex
from cnnkit.parity.rounding import ROUNDING_HEADROOM, rounding_floor
from cnnkit.runtimes.base import Runner, run_batched
from cnnkit.runtimes.registry import DEFAULT_RUNTIME, RuntimeChoice, create_runner
from cnnkit.runtimes.sessions import SessionConfig
from cnnkit.topk import top1

log = logging.getLogger(__name__)
KERAS = RuntimeChoice("keras")  # the reference of keras-onnx parity

SCHEMA = "cnnkit.parity/1"
DEFAULT_BATCH_SIZES = (1, 7, 64)

# Declared tolerances, each with its reason (printed with every run).
KERAS_ONNX_ATOL, KERAS_ONNX_RTOL = 1e-5, 1e-4
KERAS_ONNX_REASON = (
    "float32 on both sides: kernels sum in different orders, which moved the seed CNN's outputs by up to 1.2e-6; "
    "1e-5 keeps ~8x headroom and still catches one weight changed by 0.05 (that moved them by >1e-3)"
)
ONNX_ONNX_MIN_AGREEMENT, ONNX_ONNX_MAX_ACC_DROP = 0.99, 0.5
BF16_REASON = ("the candidate computes in bf16 (8-bit mantissa): elementwise fp32 tolerances do not apply, so it is "
               "gated on top-1 agreement and accuracy, as a quantised model is")
ONNX_ONNX_REASON = (
    "a quantized or float16 variant is not expected to match float32 to 1e-5; the gate is on decisions: "
    "top-1 agreement and accuracy on labelled images"
)
LAYER_RTOL = 1e-4  # a layer diverges when max |diff| exceeds this share of its largest |activation|
_TIE_FACTOR = 2.0  # a top-1 flip is a near-tie when the reference's top-2 margin is within 2x the tolerance
# The reference's own top-1 stability is measured with every pixel moved by up to this many grey levels: below an
# 8-bit image's resolution, so a model whose top-1 moves under it has no top-1 that a candidate could keep.
DITHER_GREY_LEVELS = 0.5


@dataclass(frozen=True)
class Tolerance:
    atol: float | None  # None: not gated (still measured)
    rtol: float
    min_top1_agreement: float  # 1.0: every sample (near-ties excepted)
    max_accuracy_drop_pp: float | None  # percentage points; None: not gated
    reason: str
    # "all": top-1 agreement over every input; "dataset": over the real images only where there are any (a static
    # INT8 candidate: its activation ranges come from calibration images, and synthetic inputs clip)
    agreement_inputs: str = "all"


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


def same_model_tolerance(atol: float | None = None, rtol: float | None = None, min_agreement: float | None = None,
                         max_accuracy_drop: float | None = None) -> Tolerance:
    """The gate for one float32 model in two forms (Keras and its export; the export on another runtime):
    atol 1e-5, rtol 1e-4, every top-1 kept (near-ties excepted), accuracy not gated; each given value overrides."""
    return Tolerance(
        atol=KERAS_ONNX_ATOL if atol is None else atol,
        rtol=KERAS_ONNX_RTOL if rtol is None else rtol,
        min_top1_agreement=1.0 if min_agreement is None else min_agreement,
        max_accuracy_drop_pp=max_accuracy_drop,
        reason=KERAS_ONNX_REASON if atol is None and rtol is None else "set by the user",
    )


def variant_tolerance(atol: float | None = None, rtol: float | None = None, min_agreement: float | None = None,
                      max_accuracy_drop: float | None = None, bf16: bool = False) -> Tolerance:
    """The gate for a reduced-precision variant (INT8, FP16, bf16) against float32: top-1 agreement >= 0.99 and
    an accuracy drop <= 0.5 points on labelled images, no elementwise tolerance; each given value overrides."""
    return Tolerance(
        atol=atol,
        rtol=0.0 if rtol is None else rtol,
        min_top1_agreement=ONNX_ONNX_MIN_AGREEMENT if min_agreement is None else min_agreement,
        max_accuracy_drop_pp=ONNX_ONNX_MAX_ACC_DROP if max_accuracy_drop is None else max_accuracy_drop,
        reason=("set by the user" if atol is not None or min_agreement is not None
                else BF16_REASON if bf16 else ONNX_ONNX_REASON),
    )


def gate_for_precision(tol: Tolerance, precision: str) -> Tolerance:
    """``tol`` fitted to a variant's precision: a static INT8 model's top-1 agreement is gated on real images."""
    if precision != "int8-static":
        return tol
    return replace(tol, agreement_inputs="dataset", reason=(
        f"{tol.reason}; a static INT8 candidate's activation ranges come from its calibration images, so top-1 "
        f"agreement is gated on real images (random and edge-case inputs clip: measured, reported, not gated)"))


def widen_for_rounding(tol: Tolerance, floor: float) -> Tolerance:
    """``tol`` with atol raised to ROUNDING_HEADROOM x the model's own float32 rounding ``floor`` where that is larger."""
    if tol.atol is None or ROUNDING_HEADROOM * floor <= tol.atol:
        return tol
    return replace(tol, atol=float(f"{ROUNDING_HEADROOM * floor:.2g}"), reason=(
        f"{tol.reason}; this model's own float32 rounding (ONNX Runtime with all vs no graph optimisations) "
        f"moves its outputs by up to {floor:.2g}, so atol is {ROUNDING_HEADROOM}x that"))


@dataclass(frozen=True)
class InputSet:
    """The parity inputs: uint8 pixels ``(N, H, W, C)`` at the models' size, with where each sample came from.
    Each model gets them through its own preprocessing record (:meth:`feed`)."""

    pixels: np.ndarray
    labels: np.ndarray  # -1 where unlabelled
    kinds: tuple[str, ...]  # per sample: "dataset", "random", "zeros", "full-255", "noise"
    dataset: dict[str, Any]

    def feed(self, record: PreprocessRecord | None, index: Any = slice(None)) -> np.ndarray:
        """The inputs as a model takes them; ``record`` None: the values as float32 (a model of signals, not images)."""
        if record is None:
            return np.ascontiguousarray(self.pixels[index], dtype=np.float32)
        return record.normalize(self.pixels[index])

    def __len__(self) -> int:
        return len(self.pixels)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.kinds:
            out[k] = out.get(k, 0) + 1
        return out


@dataclass(frozen=True)
class OutputDiff:
    """One output at one batch size. Differences are over the elements finite on both sides (None: no such
    element, or the output is missing or misshapen); non-finite values are counted apart and fail the check."""

    output: str
    batch_size: int
    reference_shape: tuple[int, ...]
    candidate_shape: tuple[int, ...]
    max_abs: float | None
    mean_abs: float | None
    max_rel: float | None  # over elements with |reference| >= 1e-6
    mean_rel: float | None
    min_passing_atol: float | None  # smallest atol that passes with the given rtol
    top1_agreement: float
    top1_disagreements: int
    near_ties: int  # disagreements where the reference's top-2 margin is within the tolerance
    worst_index: int
    worst_kind: str
    reference_accuracy: float | None
    candidate_accuracy: float | None
    passed: bool
    failures: tuple[str, ...] = ()
    nonfinite_reference: int = 0  # NaN/Inf values in the reference's output
    nonfinite_candidate: int = 0
    first_nonfinite: int | None = None  # the first sample holding one, on either side
    # Share of the gated inputs on which the reference keeps its own top-1 when their pixels move by up to
    # DITHER_GREY_LEVELS (None: not measured — Keras references, integer-input and signal models).
    reference_top1_stability: float | None = None
    # Top-1 agreement on the inputs measured but not gated (agreement_inputs "dataset": the synthetic ones)
    ungated_top1_agreement: float | None = None
    ungated_inputs: int = 0


@dataclass(frozen=True)
class LayerDiff:
    layer: str
    layer_class: str
    onnx_tensor: str | None  # None: no counterpart in the graph (fused away or missing)
    layout: str
    shape: tuple[int, ...]
    max_abs: float | None
    scale: float | None  # the layer's largest |activation| in the reference
    rel: float | None  # max_abs / scale
    diverges: bool
    nonfinite: int = 0  # NaN/Inf values in the layer's output, Keras and ONNX together (a divergence)


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


# --- inputs ----------------------------------------------------------------------------------------


def make_inputs(source: ImageSource | None, record: PreprocessRecord | None, samples: int, seed: int,
                labelled: bool = True, skipped: SkippedImages | None = None,
                shape: tuple[int, ...] | None = None) -> InputSet:
    """Real images (up to ``samples``, fitted to the model's size by ``record``), 16 seeded random images,
    2 all-zero, 2 all-255, 8 noisy copies of real images (or of mid-grey). ``record`` None: a model that
    takes ``shape`` (not images), values 0..255 of the same kinds."""
    rng = np.random.default_rng(seed)
    if record is not None:
        h, w = record.size
        shape = (h, w, record.channels)
    assert shape is not None
    parts, labels, kinds = [], [], []
    if source is not None:
        x, y = source.take(samples).load(record, skipped)
        parts.append(x)
        labels.append(y if labelled else np.full(len(x), -1))
        kinds += ["dataset"] * len(x)
    random = rng.integers(0, 256, (16, *shape)).astype(np.uint8)
    zeros, full = np.zeros((2, *shape), np.uint8), np.full((2, *shape), 255, np.uint8)
    base = parts[0][:8].astype(np.float64) if parts and len(parts[0]) else np.full((8, *shape), 128.0)
    noise = np.clip(np.rint(base + rng.normal(0, 40, base.shape)), 0, 255).astype(np.uint8)
    for kind, arr in (("random", random), ("zeros", zeros), ("full-255", full), ("noise", noise)):
        parts.append(arr)
        labels.append(np.full(len(arr), -1))
        kinds += [kind] * len(arr)
    described = source.describe() | {"labelled": labelled} if source is not None else {"name": None}
    return InputSet(
        pixels=np.ascontiguousarray(np.concatenate(parts)),
        labels=np.concatenate(labels).astype(np.int64),
        kinds=tuple(kinds),
        dataset=described,
    )


def dither(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pixels`` (0..255) as float32, each moved by a uniform amount within ±DITHER_GREY_LEVELS, kept in 0..255."""
    moved = pixels.astype(np.float32) + rng.uniform(-DITHER_GREY_LEVELS, DITHER_GREY_LEVELS, pixels.shape).astype(np.float32)
    return np.clip(moved, 0, 255)


def reference_stability(reference: Any, inputs: InputSet, record: PreprocessRecord | None,
                        ref_out: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray] | None:
    """Per output, for each of ``inputs``, whether ``reference`` keeps its top-1 when every pixel moves by a
    seeded uniform amount within ±DITHER_GREY_LEVELS — less than the images' own 8-bit step. None where the
    model takes integers (it cannot be fed a fraction of a level) or no images."""
    if record is None or record.dtype in ("uint8", "int8"):
        return None
    out = run_batched(reference, record.normalize(dither(inputs.pixels, np.random.default_rng([seed, 0x5EED]))), 64)
    stable = {}
    for name, ref in ref_out.items():
        got = out.get(name)
        if got is None or ref.ndim < 2 or ref.reshape(len(ref), -1).shape[1] < 2:
            continue
        stable[name] = top1(ref) == top1(got)
    return stable


def output_spread(outputs: dict[str, np.ndarray]) -> float:
    """How much the outputs vary across samples: the largest (max - min over samples) of any output element."""
    spread = 0.0
    for value in outputs.values():
        flat = np.asarray(value, dtype=np.float64).reshape(len(value), -1)
        flat = np.where(np.isfinite(flat), flat, np.nan)
        if len(flat) > 1 and np.isfinite(flat).any():
            spread = max(spread, float(np.nanmax(np.nanmax(flat, axis=0) - np.nanmin(flat, axis=0))))
    return spread


def constant_outputs_failure(outputs: dict[str, np.ndarray], tol: Tolerance, n: int, keras_reference: bool = False,
                             record: PreprocessRecord | None = None) -> str | None:
    """A failure when the reference gives (nearly) the same output for every input: within the tolerance band,
    no candidate could fail, so the check would prove nothing. ``keras_reference``: the reference is a Keras model
    (the BatchNorm calibration cnnkit offers is for those); ``record``: what fed it (a guess of raw pixels is named
    as the likely cause)."""
    spread = output_spread(outputs)
    peak = max((float(np.nanmax(np.abs(np.where(np.isfinite(v), v, np.nan)))) for v in outputs.values()
                if np.isfinite(v).any()), default=0.0)
    band = max((tol.atol or 0.0) + tol.rtol * peak, 1e-6 * peak, 1e-12)
    if spread > band:
        return None
    if spread <= max(1e-6 * peak, 1e-12):
        guess = guessed_raw_pixels(record)
        if guess:
            cause = f"Likely cause: {guess}: {PREPROCESS_FIX}; else a random-weight model"
        elif keras_reference:
            cause = ("A random-weight model? Calibrate its BatchNorm statistics on real images first "
                     "(cnnkit.keras.batchnorm.calibrate_batchnorm)")
        else:
            cause = "A random-weight model, or one whose BatchNorm statistics were never set on real images?"
        return (f"the reference's outputs vary by at most {spread:.3g} across {n} different inputs: parity on "
                f"constant outputs proves nothing. {cause}")
    return (f"the reference's outputs vary by at most {spread:.3g} across {n} different inputs, within the tolerance "
            f"band {band:.3g}: parity cannot tell the models apart. Where the band comes from the model's own float32 "
            f"rounding, the model amplifies rounding (a random-weight network can); see the per-layer table (--layers)")


# --- comparing ---------------------------------------------------------------------------------------


def compare_outputs(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    tolerance: Tolerance,
    batch_size: int,
    inputs: InputSet,
    stability: dict[str, np.ndarray] | None = None,
    suspect: str | None = None,
) -> list[OutputDiff]:
    """Compare every output; each gets its own verdict and list of failures. ``stability``: per output, whether the
    reference kept each input's top-1 under dither (:func:`reference_stability`); its share is recorded and
    explains a failed top-1 agreement, and never changes a verdict. ``suspect``: the likely cause of an unstable
    reference, when cnnkit knows one (a guess of raw pixels); else untrained or random weights are named."""
    diffs = []
    for i, (name, ref) in enumerate(reference.items()):
        cand = candidate.get(name)
        if cand is None:  # match by position when names differ (e.g. a Keras output vs an ONNX name)
            cand = list(candidate.values())[i] if i < len(candidate) else None
        if cand is None:
            diffs.append(_missing_output(name, ref, batch_size))
            continue
        diffs.append(_compare_one(name, ref.astype(np.float64), cand.astype(np.float64), tolerance, batch_size, inputs,
                                  (stability or {}).get(name), suspect))
    for d in diffs:
        log.info("output %s at batch %d: %s", d.output, d.batch_size, "pass" if d.passed else "; ".join(d.failures))
    return diffs


def _missing_output(name: str, ref: np.ndarray, batch_size: int) -> OutputDiff:
    return OutputDiff(name, batch_size, tuple(ref.shape), (), None, None, None, None, None, 0.0, len(ref), 0, -1, "",
                      None, None, False, (f"output {name}: the candidate has no such output",))


def _compare_one(name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerance, batch_size: int, inputs: InputSet,
                 kept: np.ndarray | None = None, suspect: str | None = None) -> OutputDiff:
    failures = []
    if ref.shape != cand.shape:
        return OutputDiff(name, batch_size, tuple(ref.shape), tuple(cand.shape), None, None, None, None, None, 0.0, len(ref),
                          0, -1, "", None, None, False,
                          (f"output {name} at batch {batch_size}: shape {tuple(cand.shape)} != reference {tuple(ref.shape)}",))
    # NaN compares false with every tolerance: count non-finite values first, and fail on any.
    bad_ref, bad_cand = nonfinite(ref), nonfinite(cand)
    finite = np.isfinite(ref) & np.isfinite(cand)
    first_bad = min(b.first for b in (bad_ref, bad_cand) if b is not None) if bad_ref or bad_cand else None
    for side, bad in (("reference", bad_ref), ("candidate", bad_cand)):
        if bad is not None:
            failures.append(f"output {name} at batch {batch_size}: the {side} gives {bad.describe()} "
                            f"({inputs.kinds[bad.first]})")
    diff = np.where(finite, np.abs(np.where(finite, cand, 0.0) - np.where(finite, ref, 0.0)), 0.0)
    meaningful = finite & (np.abs(np.where(finite, ref, 0.0)) >= 1e-6)
    rel = diff[meaningful] / np.abs(ref[meaningful]) if meaningful.any() else np.zeros(1)
    per_sample = diff.reshape(len(diff), -1).max(axis=1)
    worst = int(per_sample.argmax()) if first_bad is None else first_bad
    min_atol = float(np.max(np.maximum(diff - tol.rtol * np.abs(np.where(finite, ref, 0.0)), 0.0)))
    any_finite = bool(finite.any())
    if tol.atol is not None and min_atol > tol.atol:
        n_bad = int(np.sum(diff > tol.atol + tol.rtol * np.abs(ref)))
        failures.append(
            f"output {name} at batch {batch_size}: max |diff| {diff.max():.3g} (sample {worst}, {inputs.kinds[worst]}) "
            f"exceeds atol {tol.atol:g} + rtol {tol.rtol:g}*|ref| in {n_bad} element(s); smallest passing atol {min_atol:.3g}"
        )
    ref2, cand2 = ref.reshape(len(ref), -1), cand.reshape(len(cand), -1)
    ref_top, cand_top = top1(ref2), top1(cand2)
    row_bad = ~np.isfinite(ref2).all(axis=1) | ~np.isfinite(cand2).all(axis=1)
    disagree = (ref_top != cand_top) | row_bad  # a sample with NaN/Inf agrees on nothing
    sorted_ref = np.sort(ref2, axis=1)
    margin = sorted_ref[:, -1] - sorted_ref[:, -2] if ref2.shape[1] > 1 else np.full(len(ref2), np.inf)
    tie_band = _TIE_FACTOR * ((tol.atol or 0.0) + tol.rtol * np.abs(sorted_ref[:, -1]))
    near_tie = disagree & (margin <= tie_band) & ~row_bad
    gated = np.ones(len(ref2), bool)
    if tol.agreement_inputs == "dataset" and "dataset" in inputs.kinds:
        gated = np.array([k == "dataset" for k in inputs.kinds])
    real_disagree = int(np.sum(disagree & ~near_tie & gated))
    agreement = 1.0 - real_disagree / int(gated.sum())
    ungated = None if gated.all() else 1.0 - float(np.sum(disagree & ~near_tie & ~gated)) / int((~gated).sum())
    stability = None if kept is None else float(np.mean(kept[gated]))
    if agreement < tol.min_top1_agreement:
        first = int(np.flatnonzero(disagree & ~near_tie & gated)[0])
        failures.append(
            f"output {name} at batch {batch_size}: top-1 agreement {agreement:.4f} < {tol.min_top1_agreement:g} "
            f"({real_disagree} sample(s) differ, first {first}, {inputs.kinds[first]})"
            + (f"; the reference itself keeps its top-1 on only {stability:.4f} of these inputs when their pixels move "
               f"by up to {DITHER_GREY_LEVELS:g} grey level: its top-1 is not set by the image at 8-bit resolution "
               + (f"(likely cause: {suspect}: {PREPROCESS_FIX}; else untrained or random weights)" if suspect
                  else "(untrained or random weights?)")
               + ", so no reduced-precision candidate can be expected to agree"
               if stability is not None and stability < tol.min_top1_agreement else "")
        )
    labelled = inputs.labels >= 0
    ref_acc = cand_acc = None
    if labelled.any():
        ref_acc = float(np.mean(ref_top[labelled] == inputs.labels[labelled]))
        cand_acc = float(np.mean(cand_top[labelled] == inputs.labels[labelled]))
        drop_pp = 100 * (ref_acc - cand_acc)
        if tol.max_accuracy_drop_pp is not None and drop_pp > tol.max_accuracy_drop_pp:
            failures.append(
                f"output {name} at batch {batch_size}: accuracy {100 * cand_acc:.2f} % vs reference {100 * ref_acc:.2f} % "
                f"drops {drop_pp:.2f} pp > {tol.max_accuracy_drop_pp:g} pp"
            )
    return OutputDiff(
        output=name, batch_size=batch_size, reference_shape=tuple(ref.shape), candidate_shape=tuple(cand.shape),
        max_abs=float(diff.max()) if any_finite else None, mean_abs=float(diff[finite].mean()) if any_finite else None,
        max_rel=float(rel.max()) if any_finite else None, mean_rel=float(rel.mean()) if any_finite else None,
        min_passing_atol=min_atol if any_finite else None, top1_agreement=agreement, top1_disagreements=real_disagree,
        near_ties=int(near_tie.sum()), worst_index=worst, worst_kind=inputs.kinds[worst],
        reference_accuracy=ref_acc, candidate_accuracy=cand_acc, passed=not failures, failures=tuple(failures),
        nonfinite_reference=bad_ref.count if bad_ref else 0, nonfinite_candidate=bad_cand.count if bad_cand else 0,
        first_nonfinite=first_bad, reference_top1_stability=stability, ungated_top1_agreement=ungated,
        ungated_inputs=int((~gated).sum()),
    )


# --- localising ---------------------------------------------------------------------------------------


LAYER_TABLE_MAX_BYTES = 1 << 30  # Keras and ONNX activations held at once for the per-layer table
LAYER_TABLE_MAX_SAMPLES = 8


def localize_divergence(keras_runner: Any, onnx_path: Path, x_ref: np.ndarray, session: SessionConfig,
                        layer_rtol: float = LAYER_RTOL, x_onnx: np.ndarray | None = None,
                        ) -> tuple[list[LayerDiff], str | None, str | None]:
    """Compare each Keras layer's output with its ONNX tensor; name the first layer that diverges.

    ``x_ref`` is the Keras feed, ``x_onnx`` the same images as the ONNX model takes them (default: the same;
    an NCHW graph gets them transposed). Returns the per-layer table, the first divergent layer (or None) and a one-line
    explanation. Layers with no tensor to compare (fused, called more than once, several outputs, a shape
    that does not line up) are listed as unmatched, never a crash.
    """
    import onnx

    from cnnkit.graph.index import map_layers_to_tensors, with_extra_outputs

    x_onnx = x_ref if x_onnx is None else x_onnx
    model = onnx.load(str(onnx_path))
    layers = keras_runner.layers()
    comparable, why_not = _comparable_layers(layers)
    n = _layer_table_samples(comparable, len(x_ref))
    x_ref, x_onnx = x_ref[:n], x_onnx[:n]
    refs = map_layers_to_tensors(model, [layer.name for layer in comparable])
    folded = meta.folded_layers(meta.read(model))  # whose work cnnkit's export moved into another node
    tensors = list(dict.fromkeys(t for r in refs.values() for t in (r.tensor, *r.alternatives)))
    runner = create_runner(DEFAULT_RUNTIME, with_extra_outputs(model, tensors), session, label="onnx-layers")
    onnx_values = runner.infer({runner.input_name: x_onnx})
    keras_values = keras_runner.infer_layers(x_ref, comparable)
    index = GraphIndex.of(model)

    rows: list[LayerDiff] = []
    for i, layer in enumerate(layers):
        cls = type(layer).__name__
        if layer.name not in keras_values:
            rows.append(LayerDiff(layer.name, cls, None, why_not.get(layer.name, "-"), (), None, None, None, False))
            continue
        ref = keras_values[layer.name].astype(np.float64)
        tref = refs.get(layer.name)
        finite_ref = np.abs(ref[np.isfinite(ref)])
        scale = float(finite_ref.max()) if finite_ref.size else 0.0
        if tref is None:
            layout = "folded" if layer.name in folded else _fused_into(layers, i, refs) or "-"
            fused = refs.get(layout[len("fused into "):]) if layout.startswith("fused into ") else None
            rows.append(LayerDiff(layer.name, cls, fused.tensor if fused else None, layout, tuple(ref.shape), None,
                                  scale, None, False))
            continue
        tensor, got, layout = _matching_tensor(tref, onnx_values, ref.shape, model, index)
        if got is None:  # no tensor of the layer's scope has its output's shape
            shape = "x".join(map(str, onnx_values[tref.tensor].shape))
            rows.append(LayerDiff(layer.name, cls, tref.tensor, f"unmatched: ONNX shape {shape}", tuple(ref.shape), None,
                                  scale, None, False))
            continue
        bad = int(np.sum(~np.isfinite(got)) + np.sum(~np.isfinite(ref)))
        if bad:  # a NaN difference is never "> threshold": non-finite values are a divergence of their own
            rows.append(LayerDiff(layer.name, cls, tensor, layout, tuple(ref.shape), None, scale, None, True,
                                  nonfinite=bad))
            continue
        max_abs = float(np.abs(got - ref).max()) if ref.size else 0.0
        rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else None)
        rows.append(LayerDiff(layer.name, cls, tensor, layout, tuple(ref.shape), max_abs, scale, rel,
                              rel is None or rel > layer_rtol))

    first, why = _first_divergence(rows, layer_rtol)
    return rows, first, why


def _matching_tensor(tref: Any, values: dict[str, np.ndarray], shape: tuple[int, ...], model: Any,
                     index: GraphIndex) -> tuple[str, np.ndarray | None, str]:
    """The first of the scope's leaving tensors that holds the layer's output shape (NCHW ones transposed)."""
    from cnnkit.graph.index import tensor_layout

    for i, tensor in enumerate((tref.tensor, *tref.alternatives)):
        got = values[tensor].astype(np.float64)
        layout = tref.layout if i == 0 else tensor_layout(model, tensor, index)
        if got.ndim == 4 and (layout == "NCHW" or (layout == "unknown" and got.shape != shape
                                                     and got.transpose(0, 2, 3, 1).shape == shape)):
            got, layout = got.transpose(0, 2, 3, 1), "NCHW->NHWC"
        if got.shape == shape:
            return tensor, got, layout
    return tref.tensor, None, tref.layout


def _comparable_layers(layers: list[Any]) -> tuple[list[Any], dict[str, str]]:
    """Layers with one output tensor in this model; the others with the reason they are left out."""
    keep, why = [], {}
    for layer in layers:
        try:
            out = layer.output
        except (AttributeError, ValueError, RuntimeError):  # called more than once: no single output
            why[layer.name] = "unmatched: called more than once"
            continue
        if isinstance(out, list | tuple | dict):
            why[layer.name] = "unmatched: several outputs"
            continue
        keep.append(layer)
    return keep, why


def _layer_table_samples(layers: list[Any], n: int) -> int:
    """At most 8 samples, fewer where all layers' activations for Keras and ONNX would pass 1 GiB."""
    per_sample = 0
    for layer in layers:
        dims = [d for d in tuple(layer.output.shape)[1:]]
        per_sample += int(np.prod([d if isinstance(d, int) else 1 for d in dims])) * 8 * 2  # float64, both sides
    fit = LAYER_TABLE_MAX_BYTES // max(per_sample, 1)
    return max(1, min(n, LAYER_TABLE_MAX_SAMPLES, int(fit)))


_FUSING = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv1D", "Dense", "Conv2DTranspose"}


def _fused_into(layers: list[Any], i: int, refs: dict[str, Any]) -> str | None:
    """``fused into <bn>`` for a convolution or dense layer whose BatchNormalization tf2onnx folded into it:
    the ONNX node computing both carries the BatchNormalization's name."""
    layer = layers[i]
    if type(layer).__name__ not in _FUSING or i + 1 >= len(layers):
        return None
    nxt = layers[i + 1]
    if type(nxt).__name__ != "BatchNormalization" or nxt.name not in refs:
        return None
    try:
        if nxt.input is not layer.output:
            return None
    except (AttributeError, ValueError, RuntimeError):
        return None
    return f"fused into {nxt.name}"


_NO_OP_LAYERS = {"Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "ActivityRegularization"}


def _first_divergence(rows: list[LayerDiff], layer_rtol: float) -> tuple[str | None, str | None]:
    for i, row in enumerate(rows):
        if row.diverges:
            if row.nonfinite:
                return row.layer, (f"{row.layer} ({row.layer_class}) is the first layer with non-finite values: "
                                   f"{row.nonfinite} NaN/Inf in its Keras and ONNX ({row.onnx_tensor}) outputs")
            if row.max_abs is None:
                return row.layer, f"{row.layer}: ONNX tensor {row.onnx_tensor} has shape {row.shape}, Keras differs"
            share = f"{row.rel:.2g}" if row.rel is not None else "all"
            why = (f"{row.layer} ({row.layer_class}) diverges first: max |diff| {row.max_abs:.3g} = {share} of its "
                   f"largest activation {row.scale:.3g} (threshold {layer_rtol:g}); ONNX tensor {row.onnx_tensor}")
            if i == 0 or all(r.onnx_tensor is None for r in rows[:i]):
                why += "; the first layer already differs: check the input layout and the preprocessing"
            return row.layer, why
        if row.onnx_tensor is None and row.layer_class not in _NO_OP_LAYERS and row.layout == "-":
            nxt = next((r for r in rows[i + 1:] if r.onnx_tensor is not None), None)
            if nxt is not None and nxt.diverges:
                return row.layer, (f"{row.layer} ({row.layer_class}) has no counterpart in the ONNX graph, and "
                                   f"{nxt.layer} after it diverges (max |diff| {nxt.max_abs:.3g}): was it left out of the export?")
    return None, None


# --- the check ---------------------------------------------------------------------------------------


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
