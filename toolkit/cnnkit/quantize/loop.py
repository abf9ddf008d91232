"""The accuracy-aware loop (``quantize_model``): build the variant, check it against FP32 on the held-out images,
keep the worst nodes in float until the budget holds, check parity, then write it atomically with its recipe in
its metadata.

Every variant's accuracy on the held-out test split is compared with the FP32 model's (on an unlabelled folder:
top-1 agreement with FP32 stands in for accuracy; with no images at all, as FP16 and dynamic INT8 of a model that
names no dataset allow, accuracy is not checked and the result says so).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

import cnnkit
from cnnkit.choices import QuantMode
from cnnkit.data.datasets import Dataset
from cnnkit.data.preprocess import PREPROCESS_FIX, PreprocessRecord, guessed_raw_pixels
from cnnkit.envinfo import environment
from cnnkit.evaluate.accuracy import accuracy_change_pp
from cnnkit.graph import metadata as meta
from cnnkit.graph.info import describe_onnx
from cnnkit.io import atomic_path, check_not_input, check_writable
from cnnkit.quantize.build import build_variant, preprocess
from cnnkit.quantize.config import (
    SCHEMA,
    Attempt,
    QuantizeConfig,
    QuantizeError,
    QuantizeResult,
)
from cnnkit.quantize.data import QuantData, prepare_quant_data
from cnnkit.quantize.diagnose import rank_nodes_by_error
from cnnkit.quantize.speed import measure_speed, speed_batches
from cnnkit.runtimes.sessions import SessionConfig


def _gate_error(what: str, detail: str, record: PreprocessRecord, hint: str) -> QuantizeError:
    """A failed gate: ``what`` failed, then ``detail``. Where the model was fed raw pixels only because it names
    no preprocessing, that comes first, before the figures: it is the likeliest cause, and no --mode fixes it."""
    guess = guessed_raw_pixels(record)
    if guess is None:
        return QuantizeError(f"{what}: {detail}", hint=hint)
    return QuantizeError(f"{what}, most likely because {guess}: {detail}", hint=f"{PREPROCESS_FIX}; else {hint}")



DITHERED_IMAGES = 2000  # FP32's top-1 stability is measured on at most this many held-out images


def _predictions(model: Path, data: QuantData, session: SessionConfig,
                 label: str | None = None, config: QuantizeConfig | None = None,
                 dithered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 predictions of ``model`` over the evaluation images (streamed), and their labels (-1: unlabelled);
    on Ray workers with ``config.engine`` ray. NaN or Inf in the scores is a :class:`NonFiniteError` naming
    ``label``, the count and the first image. ``dithered``: the first DITHERED_IMAGES images only, every pixel
    moved within ±½ grey level (seeded; :func:`cnnkit.parity.check.dither`), locally: how stable the model's own top-1 is."""
    from cnnkit.evaluate.accuracy import tally_source
    from cnnkit.finite import NonFiniteError
    from cnnkit.parity.check import dither
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner

    assert data.evaluation is not None
    if config is not None and config.engine == "ray" and not dithered:
        from cnnkit.distributed.ray_eval import predictions_on_ray

        return predictions_on_ray(model, data.evaluation, data.record, session, config.address, data.skipped,
                                  label=label)
    runner = create_runner(DEFAULT_RUNTIME, model, session)
    rng = np.random.default_rng([0, 0x5EED])
    source = data.evaluation.head(DITHERED_IMAGES) if dithered else data.evaluation  # head: aligned with FP32
    scores, labels = tally_source(runner, source, data.record, data.skipped,
                                  transform=(lambda pixels: dither(pixels, rng)) if dithered else None)
    if scores.bad is not None:
        raise NonFiniteError(f"{label or Path(model).name}: {scores.bad.describe('output value', 'image')}",
                             hint="the model is broken for these inputs; it is not written")
    if not len(labels):
        raise QuantizeError(f"no readable image in {data.evaluation.provenance.get('source')} to measure accuracy on")
    return scores.predictions(), labels


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
        timed_batches = speed_batches(info, (1, 64))
        say(f"timing the variant against FP32 (batch {' and '.join(map(str, timed_batches))}, interleaved)")
        speed = measure_speed(Path(config.model), candidate, config.session, timed_batches) if config.measure_speed else {}
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

