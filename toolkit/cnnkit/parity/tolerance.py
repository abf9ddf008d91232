"""The declared tolerances of parity, each with its reason: one float32 model in two forms (Keras and its export)
is held to atol 1e-5 + rtol 1e-4 and every top-1; a reduced-precision variant to top-1 agreement and accuracy;
fitted to a static INT8 candidate and widened to a model's own float32 rounding."""

from __future__ import annotations

from dataclasses import dataclass, replace

from cnnkit.parity.rounding import ROUNDING_HEADROOM

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
