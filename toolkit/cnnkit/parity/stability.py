"""Is the reference a usable reference? How stable its own top-1 is when the pixels move by less than one grey
level (dither), and whether its outputs vary across the inputs at all."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.data.preprocess import PREPROCESS_FIX, PreprocessRecord, guessed_raw_pixels
from cnnkit.parity.inputs import InputSet
from cnnkit.parity.tolerance import Tolerance
from cnnkit.runtimes.base import run_batched
from cnnkit.topk import top1

# The reference's own top-1 stability is measured with every pixel moved by up to this many grey levels: below an
# 8-bit image's resolution, so a model whose top-1 moves under it has no top-1 that a candidate could keep.
DITHER_GREY_LEVELS = 0.5


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
