"""The accuracy-aware loop (``quantize_model``): build the variant, check it against FP32 on the held-out images,
try fixes in order of cost until it passes (per-channel weights, another calibration, 16-bit activations, then the
worst nodes in float) within a time budget, check parity, then write it atomically with its recipe in its metadata.

Every variant's accuracy on the held-out test split is compared with the FP32 model's (on an unlabelled folder:
top-1 agreement with FP32 stands in for accuracy; with no images at all, as FP16 and dynamic INT8 of a model that
names no dataset allow, accuracy is not checked and the result says so).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import cnnkit
from cnnkit.choices import CalibrationMethod, QuantFix, QuantFormat, QuantMode
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
    Recipe,
)
from cnnkit.quantize.data import QuantData, prepare_quant_data
from cnnkit.quantize.diagnose import depthwise_weights, explain_nodes, rank_nodes_by_error, region_activations
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
                 dithered: bool = False) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Top-1 predictions of ``model`` over the evaluation images (streamed), their labels (-1: unlabelled) and the
    seconds inference took (None on Ray); on Ray workers with ``config.engine`` ray. NaN or Inf in the scores is a :class:`NonFiniteError` naming
    ``label``, the count and the first image. ``dithered``: the first DITHERED_IMAGES images only, every pixel
    moved within ±½ grey level (seeded; :func:`cnnkit.parity.stability.dither`), locally: how stable the model's own top-1 is."""
    from cnnkit.evaluate.accuracy import tally_source
    from cnnkit.finite import NonFiniteError
    from cnnkit.parity.stability import dither
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner

    assert data.evaluation is not None
    if config is not None and config.engine == "ray" and not dithered:
        from cnnkit.distributed.ray_eval import predictions_on_ray

        preds, labels = predictions_on_ray(model, data.evaluation, data.record, session, config.address,
                                           data.skipped, label=label)
        return preds, labels, None
    runner = create_runner(DEFAULT_RUNTIME, model, session)
    rng = np.random.default_rng([0, 0x5EED])
    source = data.evaluation.head(DITHERED_IMAGES) if dithered else data.evaluation  # head: aligned with FP32
    scores, labels, seconds = tally_source(runner, source, data.record, data.skipped,
                                           transform=(lambda pixels: dither(pixels, rng)) if dithered else None)
    if scores.bad is not None:
        raise NonFiniteError(f"{label or Path(model).name}: {scores.bad.describe('output value', 'image')}",
                             hint="the model is broken for these inputs; it is not written")
    if not len(labels):
        raise QuantizeError(f"no readable image in {data.evaluation.provenance.get('source')} to measure accuracy on")
    return scores.predictions(), labels, seconds


def _score(preds: np.ndarray, labels: np.ndarray, fp32_preds: np.ndarray | None) -> float:
    """Accuracy on labelled images; top-1 agreement with FP32 on unlabelled ones."""
    if (labels >= 0).all():
        return float(np.mean(preds == labels))
    assert fp32_preds is not None
    return float(np.mean(preds == fp32_preds))


@dataclass(frozen=True)
class _Built:
    recipe: Recipe
    attempt: Attempt
    path: Path


@dataclass(frozen=True)
class _Gate:
    """What the loop aims at: the accuracy budget, and top-1 agreement with FP32 (None: not aimed at)."""

    budget_pp: float
    agreement: float | None

    def passes(self, drop: float | None, agree: float | None) -> bool:
        return drop is not None and drop <= self.budget_pp and (
            self.agreement is None or (agree is not None and agree >= self.agreement))

    def distance(self, drop: float | None, agree: float | None) -> tuple[float, float, float]:
        """How far from passing, in points (agreement's shortfall counted in points too); then drop and
        agreement break ties. Smaller is closer."""
        drop, agree = drop or 0.0, agree or 0.0
        short = 0.0 if self.agreement is None else 100 * max(self.agreement - agree, 0.0)
        return (max(drop - self.budget_pp, 0.0) + short, drop, -agree)


class _Clock:
    """The loop's time budget: a step starts only where it is expected to end within it, expected from the last
    step of its kind ("check": build and measure a variant; "rank": rank nodes by error)."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.started = time.perf_counter()
        self.last: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def took(self, kind: str, seconds: float) -> None:
        self.last[kind] = seconds

    def fits(self, kind: str) -> bool:
        return self.elapsed() + self.last.get(kind, 0.0) <= self.budget_s

    def over(self) -> bool:
        return self.elapsed() > self.budget_s

    def stamp(self) -> str:
        return f"[{self.elapsed():.0f} s of {self.budget_s:g} s]"

    def stop_note(self, where: str, kind: str) -> str:
        return (f"stopped {where} at {self.elapsed():.0f} s of its {self.budget_s:g} s time budget (--max-time): "
                f"the next step would take about {self.last.get(kind, 0.0):.0f} s more")


class _Fixes:
    """The next thing to try on the best variant so far, cheapest first: per-channel weights (depthwise
    convolutions first), another calibration method, 16-bit activations around the worst-measured region (at
    most twice), then the worst nodes kept in float, one segment per rebuild."""

    MAX_16BIT_STEPS = 2

    def __init__(self, config: QuantizeConfig, source: Path, calib: np.ndarray | None, input_name: str, work: Path):
        self.config, self.source, self.calib, self.input_name, self.work = config, source, calib, input_name, work
        self.qdq = config.mode is QuantMode.STATIC and config.format is QuantFormat.QDQ
        self.depthwise = depthwise_weights(source) if self.qdq else ()
        self.tried: set[tuple[str, ...]] = set()
        self.wide_steps = 0
        self.stopped: str | None = None

    def _go(self, clock: _Clock, name: str, recipe: Recipe) -> tuple[str, Recipe] | None:
        if not clock.fits("check"):
            self.stopped = clock.stop_note(f"before trying {name}", "check")
            return None
        return name, recipe

    def _first(self, key: str) -> bool:
        if (key,) in self.tried:
            return False
        self.tried.add((key,))
        return True

    def next(self, best: _Built, clock: _Clock, say: Callable[[str], None]) -> tuple[str, Recipe] | None:
        c, r = self.config, best.recipe
        allowed = set(c.fixes)
        if QuantFix.PER_CHANNEL in allowed and c.mode is not QuantMode.FP16 and not r.per_channel:
            new = tuple(w for w in self.depthwise if w not in r.per_channel_weights)
            if new and self._first("per-channel-depthwise"):
                return self._go(clock, f"per-channel weights for {len(new)} depthwise convolution(s)",
                                dataclasses.replace(r, per_channel_weights=r.per_channel_weights + new))
            if self._first("per-channel"):
                return self._go(clock, "per-channel weights everywhere",
                                dataclasses.replace(r, per_channel=True, per_channel_weights=()))
        if QuantFix.CALIBRATION in allowed and c.mode is QuantMode.STATIC and self._first("calibration"):
            other = CalibrationMethod.PERCENTILE if r.calibration_method is CalibrationMethod.MINMAX else CalibrationMethod.MINMAX
            return self._go(clock, f"{other.value} calibration", dataclasses.replace(r, calibration_method=other))
        wide = QuantFix.WIDE_ACTIVATIONS in allowed and self.qdq and self.wide_steps < self.MAX_16BIT_STEPS
        if not (wide or QuantFix.FLOAT in allowed):
            return None
        if not clock.fits("rank"):
            self.stopped = clock.stop_note("before ranking nodes by SQNR", "rank")
            return None
        say(f"{clock.stamp()} ranking nodes by the SQNR they lose")
        started = time.perf_counter()
        cfg = dataclasses.replace(c, per_channel=r.per_channel, calibration_method=r.calibration_method)
        ranked = rank_nodes_by_error(self.source, best.path, cfg, self.calib, self.input_name, list(r.excluded_nodes),
                                     self.work, r.per_channel_weights)
        clock.took("rank", time.perf_counter() - started)
        if wide:
            for blame in (b for b in ranked if b.kind == "activation"):
                tensors = tuple(t for t in region_activations(self.source, blame.nodes) if t not in r.activations_16bit)
                if tensors and ("16-bit", *blame.nodes) not in self.tried:
                    self.tried.add(("16-bit", *blame.nodes))
                    self.wide_steps += 1
                    return self._go(clock, f"16-bit activations around {', '.join(blame.nodes)} ({blame.why})",
                                    dataclasses.replace(r, activations_16bit=r.activations_16bit + tensors))
        if QuantFix.FLOAT in allowed and ranked:
            worst = ranked[0]
            return self._go(clock, f"float: {', '.join(worst.nodes)} ({worst.why}; the worst)",
                            dataclasses.replace(r, excluded_nodes=r.excluded_nodes + worst.nodes))
        return None


def _explain(config: QuantizeConfig, source: Path, as_asked: Path, calib: np.ndarray | None, input_name: str,
             recipe: Recipe, work: Path, say: Callable[[str], None]) -> tuple[dict, ...]:
    """Per blamed node of the variant as asked: weight SQNR per tensor and per channel, activation SQNR, and the
    fix the loop applied or would apply; said line by line (a refused variant has no result to carry it)."""
    say("explaining: ranking the nodes of the variant as asked")
    ranked = rank_nodes_by_error(source, as_asked, config, calib, input_name, list(config.exclude_nodes), work)
    rows = explain_nodes(ranked, source, recipe)

    def db(v: float | None, lossless: bool = False) -> str:
        return ("lossless" if lossless else "-") if v is None else f"{v:.1f} dB"

    for r in rows:
        say(f"explain: {r.node} ({r.op_type}): weight SQNR per tensor {db(r.weight_sqnr_per_tensor_db, r.has_weights)}, "
            f"per channel {db(r.weight_sqnr_per_channel_db, r.has_weights)}; activation SQNR {db(r.activation_sqnr_db)}; "
            f"fix: {r.fix} ({'applied' if r.applied else 'would apply'})")
    if not rows:
        say("explain: no node is blamed (nothing quantized loses measurable precision)")
    return tuple(r.to_dict() for r in rows)


def quantize_model(config: QuantizeConfig, dataset: Dataset | QuantData | None = None,
                   progress: Callable[[str], None] | None = None) -> QuantizeResult:
    """Build the variant, check it against the FP32 model, try fixes cheapest first (:class:`_Fixes`) until the
    gate holds, ``max_attempts`` rebuilds are spent or the next step would end past ``max_time_s``, then write it
    atomically. A variant that fails its gate (the accuracy budget, or parity with FP32) raises
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
    clock = _Clock(config.max_time_s)

    from cnnkit.parity.stability import DITHER_GREY_LEVELS
    from cnnkit.parity.tolerance import ONNX_ONNX_MIN_AGREEMENT

    checked = data.evaluation is not None
    fp32_preds = y_eval = None
    fp32_acc: float | None = None
    # The loop aims at the whole gate: the accuracy budget and parity's top-1 agreement with FP32 — unless FP32's
    # own top-1 moves when pixels move by less than a grey level: no variant can keep such a top-1, and keeping
    # nodes in float for it would only end in a model that is mostly float.
    agreement_target: float | None = None
    fp32_stability: float | None = None
    if checked:
        say(f"{clock.stamp()} measuring FP32 on the accuracy images")
        started = time.perf_counter()
        fp32_preds, y_eval, _ = _predictions(Path(config.model), data, config.session, config=config)
        clock.took("check", time.perf_counter() - started)
        fp32_acc = _score(fp32_preds, y_eval, fp32_preds)
        agreement_target = ONNX_ONNX_MIN_AGREEMENT
        if data.record.dtype not in ("uint8", "int8"):
            moved, _, _ = _predictions(Path(config.model), data, config.session, dithered=True)
            fp32_stability = float(np.mean(moved == fp32_preds[: len(moved)]))
            if fp32_stability < ONNX_ONNX_MIN_AGREEMENT:
                agreement_target = None
                guess = guessed_raw_pixels(data.record)
                say(f"note: FP32's own top-1 holds on only {100 * fp32_stability:.2f} % of the accuracy images when "
                    f"their pixels move by up to {DITHER_GREY_LEVELS:g} grey level"
                    + (f" (likely cause: {guess}: {PREPROCESS_FIX})" if guess else "") + ": no node is kept in float for top-1 "
                    "agreement, which such a model cannot be relied on to keep; the loop aims at the accuracy budget "
                    "(parity with FP32 still gates agreement)")
    with tempfile.TemporaryDirectory(prefix="cnnkit-quantize-") as tmp:
        work = Path(tmp)
        source = Path(config.model)
        if config.mode is not QuantMode.FP16:
            say("pre-processing (quant_pre_process)")
            source = preprocess(source, work / "pre.onnx")
        gate = _Gate(config.max_accuracy_drop, agreement_target)
        fixes = _Fixes(config, source, calib, info.input_name, work)
        # The recipe each fix builds on: the best so far. A fix that brings the variant no closer to its gate is
        # undone; nodes kept in float stay (each rebuild keeps more).
        best: _Built | None = None
        attempts: list[Attempt] = []
        stopped: str | None = None
        step: tuple[str, Recipe] | None = ("as asked", Recipe(config.per_channel, config.calibration_method,
                                                              excluded_nodes=tuple(config.exclude_nodes)))
        if not clock.fits("check"):
            stopped = clock.stop_note("before the first build", "measuring FP32 on the accuracy images")
        while step is not None and stopped is None:
            name, recipe = step
            candidate = work / f"variant-{len(attempts)}.onnx"
            cfg = dataclasses.replace(config, per_channel=recipe.per_channel, calibration_method=recipe.calibration_method)
            say(f"{clock.stamp()} build {len(attempts) + 1}: {name}")
            started = time.perf_counter()
            try:
                build_variant(source, candidate, cfg, calib, info.input_name, list(recipe.excluded_nodes),
                              recipe.per_channel_weights, recipe.activations_16bit)
            except QuantizeError as exc:
                if best is None:  # the build as asked: nothing to fall back on
                    raise
                # A fix the quantizer cannot build (e.g. its histogram calibrators on a narrow range) is one
                # step that failed, not the end of the loop: say so, record it, try the next fix.
                seconds = time.perf_counter() - started
                clock.took("check", seconds)
                reason = exc.message.split(": ", 1)[-1]
                attempts.append(Attempt(recipe.excluded_nodes, None, None, False, step=name, kept=False,
                                        recipe=recipe.to_dict(), seconds=seconds, error=reason))
                say(f"could not build it ({reason}): skipped")
                step = fixes.next(best, clock, say)
                if step is None and fixes.stopped:
                    stopped = fixes.stopped
                continue
            if not checked:
                attempts.append(Attempt(recipe.excluded_nodes, None, None, True, step=name, recipe=recipe.to_dict(),
                                        seconds=time.perf_counter() - started))
                best = _Built(recipe, attempts[-1], candidate)
                break
            preds, _, infer_s = _predictions(candidate, data, config.session, label=f"the {config.mode.value} variant",
                                             config=config)
            acc = _score(preds, y_eval, fp32_preds)
            agree = float(np.mean(preds == fp32_preds))
            drop = -accuracy_change_pp(fp32_acc, acc)
            seconds = time.perf_counter() - started
            clock.took("check", seconds)
            closer = best is None or name.startswith("float:") or gate.distance(drop, agree) < gate.distance(
                best.attempt.drop_pp, best.attempt.top1_agreement)
            attempt = Attempt(recipe.excluded_nodes, acc, drop, drop <= config.max_accuracy_drop, agree, step=name,
                              kept=closer, recipe=recipe.to_dict(), seconds=seconds,
                              infer_ms_per_image=None if infer_s is None else 1000 * infer_s / max(len(preds), 1))
            attempts.append(attempt)
            agree_ok = agreement_target is None or agree >= agreement_target
            say(f"{data.metric.split(' (')[0]} {100 * acc:.2f} % vs FP32 {100 * fp32_acc:.2f} %: drop {drop:+.2f} pp "
                f"({'within' if attempt.within_budget else 'over'} the {config.max_accuracy_drop:g} pp budget); top-1 "
                f"agreement {100 * agree:.2f} %" + ("" if agreement_target is None else
                                                   f" ({'at or above' if agree_ok else 'below'} {100 * agreement_target:g} %)")
                + ("" if closer else "; no closer to the gate: undone"))
            if closer:
                best = _Built(recipe, attempt, candidate)
            assert best is not None
            if gate.passes(best.attempt.drop_pp, best.attempt.top1_agreement) or len(attempts) > config.max_attempts:
                break
            step = fixes.next(best, clock, say)
            if step is None and fixes.stopped:
                stopped = fixes.stopped
        if best is None:
            raise _gate_error(f"{config.mode.value} quantization of {Path(config.model).name} stopped at its "
                              f"{config.max_time_s:g} s time budget", f"{stopped}; nothing was built", data.record,
                              "raise --max-time, or measure on fewer images (--eval-samples, --calibration-samples)")
        if stopped:
            say(f"note: {stopped}")
        explanation: tuple[dict, ...] = ()
        if config.explain and clock.over():
            say(f"note: no explanation: the {config.max_time_s:g} s time budget is spent")
        elif config.explain:
            explanation = _explain(config, source, work / "variant-0.onnx", calib, info.input_name, best.recipe, work, say)
        final, candidate, excluded = best.attempt, best.path, list(best.recipe.excluded_nodes)
        failures: list[str] = []
        if not final.within_budget:
            tried = "; ".join(f"{a.step}: " + ("could not be built" if a.error else f"drop {a.drop_pp:+.2f} pp"
                                                    + ("" if a.kept else " (undone)")) for a in attempts)
            where = f"; {stopped}" if stopped else ""
            failures.append(f"cannot meet the {config.max_accuracy_drop:g} pp accuracy budget with {config.mode.value} "
                            f"quantization of {Path(config.model).name} (tried: {tried}{where})")
            if not config.keep_failed:
                raise _gate_error(f"cannot meet the {config.max_accuracy_drop:g} pp accuracy budget with {config.mode.value} "
                                  f"quantization of {Path(config.model).name}", f"tried: {tried}{where}; the variant is not written",
                                  data.record, ("raise --max-time, " if stopped else "") +
                                  "raise --max-accuracy-drop, try another --mode or --calibration-method, "
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
            where = f"; the loop {stopped}" if stopped else ""
            raise _gate_error(
                f"the {config.mode.value} variant of {Path(config.model).name} fails its gate",
                f"{failures[0]}{more}{where}; the variant is not written", data.record,
                ("raise --max-time, " if stopped else "") + "run cnnkit parity on the two models for every figure, "
                "try another --mode, or pass --keep-failed to write it marked as failed")
        timed_batches = speed_batches(info, (1, 64))
        if config.measure_speed and not clock.over():
            say(f"timing the variant against FP32 (batch {' and '.join(map(str, timed_batches))}, interleaved)")
        speed: dict = {}
        if config.measure_speed and clock.over():
            say(f"note: the variant is not timed against FP32: the {config.max_time_s:g} s time budget is spent")
        elif config.measure_speed:
            speed = measure_speed(Path(config.model), candidate, config.session, timed_batches)
        slowdown: dict = {}
        if config.measure_speed and config.mode is not QuantMode.FP16 and not clock.over():
            from cnnkit.envinfo import cpu_info
            from cnnkit.quantize.slowdown import explain_slowdown

            say("reading the graph ONNX Runtime runs, and profiling FP32 and the variant per op type")
            batch = timed_batches[0]
            feed = (info.input_name, calib[:batch]) if calib is not None and len(calib) >= batch else None
            slowdown = explain_slowdown(Path(config.model), candidate, config.session, work, cpu_info()["isa"], feed,
                                        format_qdq=config.mode is QuantMode.STATIC and config.format is QuantFormat.QDQ
                                        ).to_dict()
        # The settings it was built with: the config's, with the fixes the loop applied.
        settings = dataclasses.replace(config, per_channel=best.recipe.per_channel,
                                       calibration_method=best.recipe.calibration_method).settings()
        model = onnx.load(str(candidate))
        meta.write(model, {
            meta.QUANTIZED_FROM: Path(config.model).name,
            meta.QUANTIZED_FROM_SHA256: info.sha256,
            meta.QUANTIZATION: json.dumps(settings | {"excluded_nodes": excluded} | {
                k: list(v) for k, v in (("per_channel_weights", best.recipe.per_channel_weights),
                                        ("activations_16bit", best.recipe.activations_16bit)) if v}),
            meta.QUANTIZED_BY: f"cnnkit {cnnkit.__version__}",
            meta.GATE: "failed" if failures else "passed",
            **({meta.GATE_FAILURES: json.dumps(failures)} if failures else {}),
        })
        with atomic_path(out, force=config.force) as tmp_out:
            onnx.save(model, str(tmp_out))
    p_out = parity.outputs[0]
    return QuantizeResult(
        schema=SCHEMA, source=str(config.model), source_sha256=info.sha256, output=str(out),
        settings=settings, budget_pp=config.max_accuracy_drop,
        dataset=data.provenance | {"evaluated_samples": 0 if y_eval is None else int(len(y_eval)), "metric": data.metric,
                                   "accuracy_engine": config.engine, "fp32_top1_stability": fp32_stability,
                                   "preprocess": data.record.to_dict(), "notes": list(data.notes),
                                   "skipped_images": data.skipped.to_dict() if data.skipped else {"count": 0, "examples": []}},
        fp32_accuracy=fp32_acc, accuracy=final.accuracy, drop_pp=final.drop_pp,
        top1_agreement=final.top1_agreement, fp32_size_bytes=info.size_bytes,
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
        recipe=best.recipe.to_dict(),
        stopped=stopped,
        explanation=explanation,
        slowdown=slowdown,
    )

