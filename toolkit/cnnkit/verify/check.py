"""Verify on the device: run a bundle's golden inputs through a runner and compare with its golden outputs.

No reference model and no training stack: the reference's outputs travel in the bundle. The comparison is
parity's (:func:`cnnkit.parity.compare.compare_outputs`: NaN-aware, tolerance, top-1 agreement with near-ties, the
reference's top-1 stability). The bundled model is held to the bundle's same-model gate; another artifact
(``model``) to the same gate when it is float32, to the variant gate when it is INT8 or FP16. When the check fails,
it says what diverged where it can tell: the preprocessing, a weight, the first node that made a NaN.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError, ModelFileError
from cnnkit.parity.compare import OutputDiff
from cnnkit.parity.tolerance import Tolerance
from cnnkit.runtimes.registry import DEFAULT_RUNTIME, RuntimeChoice
from cnnkit.runtimes.sessions import SessionConfig

log = logging.getLogger(__name__)

SCHEMA = "cnnkit.verify/1"
INPUT_TOLERANCE = 1e-6  # preprocessing here vs the golden tensors: float32 arithmetic only


@dataclass(frozen=True)
class VerifyConfig:
    """Verify ``bundle`` on ``runtime``. Defaults: the bundled model, ONNX Runtime on the CPU, the bundle's
    preprocessing record, batch sizes and gates."""

    bundle: Path
    runtime: RuntimeChoice = DEFAULT_RUNTIME
    session: SessionConfig = field(default_factory=SessionConfig)
    model: Path | None = None  # another artifact: an .onnx (a variant), or a .tflite for LiteRT
    preprocess: Any = None  # PreprocessChoice | None: an override (its effect is checked against the golden tensors)
    batch_sizes: tuple[int, ...] | None = None
    atol: float | None = None
    rtol: float | None = None
    min_agreement: float | None = None
    max_accuracy_drop: float | None = None

    def __post_init__(self) -> None:
        from cnnkit.finite import require_finite

        for name in ("atol", "rtol", "min_agreement", "max_accuracy_drop"):
            require_finite(f"--{name.replace('_', '-')}", getattr(self, name))
        if self.batch_sizes is not None and (not self.batch_sizes or any(b <= 0 for b in self.batch_sizes)):
            raise CnnkitError(f"--batch-sizes must be positive integers, got {list(self.batch_sizes)}")


@dataclass(frozen=True)
class VerifyResult:
    schema: str
    passed: bool
    bundle: dict[str, Any]  # path, sha256, model sha256, created, reference, made_on (its machine and libraries)
    model: dict[str, Any]  # path, sha256, precision, same_as_bundle
    gate_kind: str  # "same-model" or "variant"
    tolerance: Tolerance
    runtime: dict[str, Any]  # runtime, precision, label
    provider: dict[str, Any]  # what actually ran it
    batch_sizes: tuple[int, ...]
    inputs: dict[str, Any]  # counts, total, preprocess, max_input_diff (vs the golden tensors)
    outputs: tuple[OutputDiff, ...]
    failures: tuple[str, ...]
    diagnosis: tuple[str, ...] = ()  # what diverged, where it can be told
    environment: dict[str, Any] = field(default_factory=dict)  # this device's fingerprint
    node: str | None = None  # the fleet node that ran it (--engine ray)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_bundle(config: VerifyConfig) -> VerifyResult:
    """Open and check the bundle, run its golden inputs through the chosen runner, apply the gate."""
    from cnnkit.verify.bundle import open_bundle

    with open_bundle(config.bundle) as bundle:
        return verify_opened(bundle, config)


def verify_opened(bundle: Any, config: VerifyConfig) -> VerifyResult:
    """:func:`verify_bundle` on an opened :class:`~cnnkit.verify.bundle.Bundle`."""
    from cnnkit.data.preprocess import PreprocessRecord, resolve_record
    from cnnkit.envinfo import environment
    from cnnkit.graph.info import describe_onnx
    from cnnkit.io import sha256_file
    from cnnkit.parity.check import accepted_batch_sizes
    from cnnkit.parity.compare import compare_outputs
    from cnnkit.parity.inputs import InputSet
    from cnnkit.parity.tolerance import gate_for_precision, same_model_tolerance, variant_tolerance
    from cnnkit.runtimes.registry import create_runner
    from cnnkit.runtimes.base import run_batched

    m = bundle.manifest
    onnx_path, tflite = bundle.model_path, bundle.tflite_path
    other = Path(config.model) if config.model is not None else None
    precision = m.model["precision"]
    if other is not None:
        from cnnkit.filekind import ONNX, require_file, sniff

        require_file(other)
        kind = sniff(other)
        if other.suffix == ".tflite":
            if config.runtime.runtime != "litert":
                raise CnnkitError(f"--model {other} is a .tflite: LiteRT runs it", hint="add --runtime litert")
            tflite = other
            model_sha = sha256_file(other)
            same = m.model["tflite"] is not None and model_sha == m.model["tflite"]["sha256"]
        elif kind == ONNX:
            onnx_path = other
            info = describe_onnx(other, require_image=False)
            if info.input is None or info.input.hwc != (m.input["height"], m.input["width"], m.input["channels"]):
                takes = "x".join(map(str, info.input.hwc)) if info.input is not None else str(list(info.input_shape))
                raise ModelFileError(
                    f"--model {other} takes {takes} inputs; the bundle's golden inputs are "
                    f"{m.input['height']}x{m.input['width']}x{m.input['channels']} (its input contract)",
                    hint="verify an artifact of the bundled model, or bundle this model: cnnkit bundle")
            if len(info.output_names) != len(m.output_names):
                raise ModelFileError(f"--model {other} has {len(info.output_names)} output(s); the bundle's model has "
                                     f"{len(m.output_names)} ({', '.join(m.output_names)})",
                                     hint="verify an artifact of the bundled model")
            precision = info.precision
            model_sha = sha256_file(other)
            same = model_sha == m.model["sha256"]
            if config.runtime.runtime == "litert":
                raise CnnkitError(f"--runtime litert runs a .tflite, got --model {other}",
                                  hint="pass the .tflite as --model, or leave --model out for the bundled one")
        else:
            raise ModelFileError(f"--model {other} is {kind}; verify takes an .onnx model or a .tflite for LiteRT")
    else:
        if config.runtime.runtime == "litert" and tflite is None:
            raise CnnkitError(f"{bundle.path} holds no .tflite for LiteRT",
                              hint="bundle with the .tflite beside the model (or --tflite), or pass --model X.tflite")
        model_sha = m.model["tflite"]["sha256"] if config.runtime.runtime == "litert" else m.model["sha256"]
        same = True
    reduced = precision not in ("fp32",) or config.runtime.precision == "bf16"
    given = (config.atol, config.rtol, config.min_agreement, config.max_accuracy_drop)
    if not reduced:
        gate_kind = "same-model"
        tol = m.gate if not any(v is not None for v in given) else same_model_tolerance(*given)
    elif precision == m.model["precision"] and config.runtime.precision != "bf16":
        gate_kind = "variant"  # the bundled model is itself a variant: its own gate
        tol = m.gate if not any(v is not None for v in given) else gate_for_precision(variant_tolerance(*given), precision)
    else:
        gate_kind = "variant"
        base = m.variant_gate if not any(v is not None for v in given) else variant_tolerance(
            *given, bf16=config.runtime.precision == "bf16")
        tol = gate_for_precision(base, precision)

    # The golden pixels through the record in use here: the bundle's, or the user's override; compared with the
    # golden tensors, so a different preprocessing on this device is named as such.
    bundled = PreprocessRecord.from_dict(m.preprocess)
    failures: list[str] = []
    diagnosis: list[str] = []
    runner = create_runner(config.runtime, onnx_path, config.session, tflite)
    h, w, c = m.input["height"], m.input["width"], m.input["channels"]
    layout, dtype = bundled.layout, bundled.dtype
    if other is not None and other.suffix == ".onnx":  # a variant: its own layout and dtype, the same values
        variant_input = describe_onnx(other).input
        layout, dtype = variant_input.layout, variant_input.dtype
    if config.preprocess is not None and config.preprocess.given:
        record = resolve_record(config.preprocess, {})[0].bind(h, w, c, layout, dtype)
    elif (layout, dtype) != (bundled.layout, bundled.dtype):
        record = replace(bundled, layout=None, dtype=None).bind(h, w, c, layout, dtype)
    else:
        record = bundled
    x = record.normalize(bundle.pixels)
    input_diff = None
    if (record.layout, record.dtype) == (bundled.layout, bundled.dtype):
        input_diff = float(np.max(np.abs(x.astype(np.float64) - bundle.inputs.astype(np.float64)))) if x.size else 0.0
        differs = not np.isfinite(input_diff) or input_diff > INPUT_TOLERANCE * max(1.0, float(np.abs(bundle.inputs).max()))
        what = f"the input tensors differ from the golden ones by up to {input_diff:.3g}"
    else:
        differs = _values(record) != _values(bundled)
        what = "its values differ"
    if differs:
        failures.append(f"preprocessing differs from the bundle's: {what} ({record.describe()} here; the "
                        f"bundle's {bundled.describe()})")
        diagnosis.append("preprocessing: the inputs already differ before the model runs")

    inputs = InputSet(pixels=bundle.pixels, labels=bundle.labels, kinds=bundle.kinds, dataset=m.inputs.get("dataset", {}))
    wanted = config.batch_sizes or tuple(m.batch_sizes)
    image = getattr(runner, "image", None)
    batch_sizes, batch_note = accepted_batch_sizes(wanted, runner.label, image, None)
    diffs: list[OutputDiff] = []
    log.info("running %d golden inputs at batch sizes %s", len(x), ", ".join(map(str, batch_sizes)))
    for b in batch_sizes:
        got = run_batched(runner, x, b)
        got = _by_bundle_names(got, m.output_names)
        diffs += compare_outputs(bundle.outputs, got, tol, b, inputs, bundle.stability)
    failures += [f for d in diffs for f in d.failures]
    passed = not failures
    if not passed:
        diagnosis += _diagnose(bundle, onnx_path, other, diffs, x, config.session)
    provider = runner.info.provider_record() | {"precision": runner.info.precision, "device": runner.info.device,
                                                "version": runner.info.version}
    return VerifyResult(
        schema=SCHEMA, passed=passed,
        bundle={"path": str(bundle.path), "sha256": bundle.sha256, "model_sha256": m.model["sha256"],
                "created": m.created, "reference": m.reference, "made_on": _made_on(m.environment)},
        model={"path": str(other) if other is not None else f"{bundle.path}:{'model.tflite' if config.runtime.runtime == 'litert' else 'model.onnx'}",
               "sha256": model_sha, "precision": precision if config.runtime.runtime != "litert" else "fp32",
               "same_as_bundle": same},
        gate_kind=gate_kind, tolerance=tol,
        runtime=config.runtime.to_dict() | {"label": config.runtime.label},
        provider=provider | {"runtime": config.runtime.runtime},
        batch_sizes=tuple(batch_sizes),
        inputs={"total": len(x), "counts": inputs.counts(), "preprocess": record.to_dict(),
                "preprocess_overridden": record != bundled and config.preprocess is not None,
                "max_input_diff": input_diff} | ({"batch_note": batch_note} if batch_note else {}),
        outputs=tuple(diffs), failures=tuple(failures), diagnosis=tuple(diagnosis), environment=environment(),
    )


def _values(record: Any) -> tuple[Any, ...]:
    return (record.scale, record.mean, record.std, record.channel_order, record.crop_fraction)


def _by_bundle_names(got: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The runner's outputs under the bundle's names (by position where a variant renamed them)."""
    if all(n in got for n in names):
        return {n: got[n] for n in names}
    values = list(got.values())
    return {n: values[i] for i, n in enumerate(names) if i < len(values)}


def _made_on(env: dict[str, Any]) -> dict[str, Any]:
    packages = env.get("packages") or {}
    return {"machine": env.get("machine"), "cpu": (env.get("cpu") or {}).get("model"),
            "onnxruntime": packages.get("onnxruntime") or packages.get("onnxruntime-gpu"),
            "cnnkit": packages.get("cnnkit"), "git_commit": env.get("git_commit")}


# --- what diverged -------------------------------------------------------------------------------------


def _diagnose(bundle: Any, onnx_path: Path, other: Path | None, diffs: list[OutputDiff], x: np.ndarray,
              session: SessionConfig) -> list[str]:
    """Lines naming what diverged: weights that differ from the bundled model's, the first node giving NaN/Inf."""
    lines: list[str] = []
    if other is not None and other.suffix == ".onnx":
        from cnnkit.graph import metadata as meta
        from cnnkit.graph.info import describe_onnx

        if describe_onnx(other, require_image=False).metadata.get(meta.GATE) == "failed":
            lines.append(f"{other.name}'s metadata says {meta.GATE}=failed: cnnkit quantize wrote it only because of "
                         f"--keep-failed")
        lines += weight_differences(bundle.model_path, other)
    bad = next((d for d in diffs if d.nonfinite_candidate), None)
    if bad is not None and bad.first_nonfinite is not None and onnx_path.suffix == ".onnx":
        try:
            found = first_nonfinite_node(onnx_path, x[bad.first_nonfinite : bad.first_nonfinite + 1], session)
        except Exception as exc:  # noqa: BLE001 (a diagnostic: the verdict stands without it)
            log.debug("locating the first non-finite node failed", exc_info=True)
            found = f"the node that first gives NaN/Inf could not be located: {type(exc).__name__}"
        if found:
            lines.append(found)
    return lines


def weight_differences(bundled: Path, other: Path, limit: int = 5) -> list[str]:
    """One line per float initializer of ``other`` whose values differ from the bundled model's (same name and
    shape); a variant's lower-precision weight (FP16) is compared with the bundled weight rounded to its dtype, so
    only changes beyond that rounding count. Empty where the graphs share no such initializer."""
    import onnx
    from onnx import numpy_helper

    from cnnkit.graph.index import GraphIndex

    a = GraphIndex.of(onnx.load(str(bundled))).initializers
    lines = []
    for t in onnx.load(str(other)).graph.initializer:
        ref = a.get(t.name)
        if ref is None or list(ref.dims) != list(t.dims):
            continue
        va, vb = numpy_helper.to_array(ref), numpy_helper.to_array(t)
        if va.dtype.kind != "f" or vb.dtype.kind != "f":
            continue
        rounded = va.astype(vb.dtype) if vb.dtype.itemsize < va.dtype.itemsize else va
        if np.array_equal(rounded, vb, equal_nan=True):
            continue
        changed = int(np.sum(rounded != vb))
        kind = f" (beyond {vb.dtype} rounding)" if rounded is not va else ""
        lines.append(f"weight {t.name}: {changed} of {va.size} value(s) differ from the bundled model's{kind} "
                     f"(max |diff| {float(np.max(np.abs(va.astype(np.float64) - vb.astype(np.float64)))):.3g})")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more weight(s)"]
    return lines


def first_nonfinite_node(model_path: Path, x: np.ndarray, session: SessionConfig) -> str | None:
    """The first node (in graph order) whose output holds NaN/Inf for ``x``, on ONNX Runtime with every node
    output exposed; None where none does (the runtime made it, not the graph)."""
    import onnx

    from cnnkit.graph.index import GraphIndex, with_extra_outputs
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner

    model = onnx.load(str(model_path))
    produced = [(node, out) for out, node in GraphIndex.of(model).producers.items()]  # in graph order
    runner = create_runner(DEFAULT_RUNTIME, with_extra_outputs(model, [out for _, out in produced]), session,
                           label="onnx-nodes")
    values = runner.infer({runner.input_name: x})
    for node, out in produced:
        value = values.get(out)
        if value is None or not np.issubdtype(np.asarray(value).dtype, np.floating):
            continue
        if not np.isfinite(value).all():
            n = int(np.sum(~np.isfinite(value)))
            return f"node {node.name or '(unnamed)'} ({node.op_type}) is the first to give NaN/Inf ({n} value(s) in {out})"
    return None
