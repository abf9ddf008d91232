"""The comparator: every output of the candidate against the reference's, NaN-aware, within a tolerance, with top-1
agreement (near-ties excepted) and accuracy on labelled images; one verdict and its failures per output."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from cnnkit.data.preprocess import PREPROCESS_FIX
from cnnkit.finite import nonfinite
from cnnkit.parity.inputs import InputSet
from cnnkit.parity.stability import DITHER_GREY_LEVELS
from cnnkit.parity.tolerance import Tolerance
from cnnkit.topk import top1

log = logging.getLogger(__name__)

_TIE_FACTOR = 2.0  # a top-1 flip is a near-tie when the reference's top-2 margin is within 2x the tolerance


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
