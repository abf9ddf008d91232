"""Which runtime x precision x options to deploy, per batch size, with the evidence for it.

Candidates are the rows of one interleaved benchmark (every runtime and precision measured in the same
rounds). A candidate is admissible if its top-1 accuracy on the model's dataset, measured on that very
runtime and precision, stays within the budget of the default's (ONNX Runtime with the options given): a
precision change such as bf16 is evaluated before it can be recommended. Among the admissible, the fastest
replaces the default only where the per-round paired ratios confirm its lead (:func:`cnnkit.stats.ratio_interval`,
a bootstrap over rounds); otherwise the answer is "no confirmed lead" and the default. So the recommendation
is never slower than the best single runtime by more than the noise that could not be told apart.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.bench.benchmark import ProgressCallback, check_runtimes, run_benchmark
from cnnkit.bench.config import BenchConfig
from cnnkit.bench.result import BenchCase, BenchResult
from cnnkit.bench.tune import session_flags
from cnnkit.errors import CnnkitError
from cnnkit.runtimes.registry import RuntimeChoice, parse_runtimes, runtime_label
from cnnkit.stats import ratio_interval

SCHEMA = "cnnkit.recommend/1"


@dataclass(frozen=True)
class CandidateAccuracy:
    model: str
    runtime: str  # the --runtime item: onnxruntime, openvino, openvino:bf16, litert
    precision: str  # what it computed in
    accuracy: float
    drop_pp: float  # against the default, in percentage points (negative: better)
    admissible: bool


@dataclass(frozen=True)
class BatchRecommendation:
    model: str
    batch_size: int
    recommended: str  # a runtime label
    confirmed: bool  # the recommended one's lead over the default is confirmed by the rounds
    fastest: str  # lowest median among the admissible (may be unconfirmed)
    default: str
    p50_ms: float  # the recommended one's median
    default_p50_ms: float
    ratio_to_default: float  # median over rounds of recommended/default round medians
    command: str  # reproduces the recommended configuration's measurement
    note: str


@dataclass(frozen=True)
class Recommendation:
    schema: str
    max_accuracy_drop_pp: float
    dataset: dict[str, Any]
    accuracy: tuple[CandidateAccuracy, ...]
    batches: tuple[BatchRecommendation, ...]
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recommendation:
        """The record a bench result holds (``BenchResult.recommendation``), typed again."""
        return cls(**(data | {"accuracy": tuple(CandidateAccuracy(**a) for a in data["accuracy"]),
                              "batches": tuple(BatchRecommendation(**b) for b in data["batches"])}))


def run_recommended(config: BenchConfig, progress: ProgressCallback | None = None,
                    notify: Callable[[str], None] | None = None) -> BenchResult:
    """``bench --recommend``: the benchmark of ``config`` with ``result.recommendation`` filled in.

    The candidates (:func:`candidate_runtimes`) are evaluated first, so that a dataset problem fails before
    minutes of timing, then measured in ``config.recommend.rounds`` interleaved rounds.
    """
    wanted = config.recommend
    if wanted is None:
        raise ValueError("run_recommended needs config.recommend")
    config = dataclasses.replace(config, runtimes=candidate_runtimes(config.runtimes), rounds=wanted.rounds)
    check_runtimes(config)
    if progress:
        progress("evaluating accuracy on every runtime and precision", 0, 0)
    dataset, accuracy = evaluate_candidates(config, wanted.dataset, wanted.data_dir, wanted.max_accuracy_drop)
    if dataset.get("notice") and notify:
        notify(dataset["notice"])
    result = run_benchmark(config, progress)
    advice = recommend(result, accuracy, wanted.max_accuracy_drop, dataset, config.seed)
    return dataclasses.replace(result, recommendation=advice.to_dict())


def case_label(case: BenchCase) -> str:
    """The ``--runtime`` item a case was measured with (its precision as it ran: bf16 is never fp32)."""
    return runtime_label(case.runtime, case.precision)


def candidate_runtimes(runtimes: tuple[RuntimeChoice, ...]) -> tuple[RuntimeChoice, ...]:
    """The runtimes a recommendation compares: the given ones, ONNX Runtime (the default) first, and for
    OpenVINO both precisions where the CPU computes bf16."""
    out = [RuntimeChoice()]
    for choice in runtimes:
        if choice.runtime == "openvino":
            from cnnkit.runtimes.openvino import bf16_supported

            out += [RuntimeChoice("openvino", "fp32")] + ([RuntimeChoice("openvino", "bf16")] if bf16_supported() else [])
        else:
            out.append(choice)
    return tuple(dict.fromkeys(out))


def evaluate_candidates(config: BenchConfig, dataset_name: str | None, data_dir: Path | None, max_drop_pp: float,
                        limit: int | None = None) -> tuple[dict[str, Any], list[CandidateAccuracy]]:
    """Top-1 accuracy of every model on every runtime and precision of ``config``, on the model's dataset."""
    from cnnkit.data.sources import model_class_names, open_images
    from cnnkit.evaluate.accuracy import EvalConfig, evaluate_models
    from cnnkit.graph.info import describe_onnx

    out: list[CandidateAccuracy] = []
    described: dict[str, Any] = {}
    for model in config.models:
        info = describe_onnx(model)
        names, names_from = model_class_names(info.metadata)
        # With no --dataset, the dataset the model was trained on (from --data-dir if given); never silently another.
        data = open_images(dataset_name, data_dir, "test", names, names_from, model=model, model_classes=info.classes)
        base = None
        for choice in config.runtimes:
            ev = evaluate_models(EvalConfig((Path(model),), session=config.session, limit=limit, runtime=choice,
                                            tflite=config.tflite), data).models[0]
            base = ev.accuracy if base is None else base  # the first runtime is the default (onnxruntime)
            drop = 100 * (base - ev.accuracy)
            out.append(CandidateAccuracy(str(model), runtime_label(choice.runtime, ev.precision), ev.precision, ev.accuracy, drop, drop <= max_drop_pp))
        described = data.describe() | {"evaluated_samples": ev.samples}
    return described, out


def recommend(result: BenchResult, accuracy: list[CandidateAccuracy], max_drop_pp: float, dataset: dict[str, Any],
              seed: int = 0) -> Recommendation:
    """Per model and batch size, the fastest admissible candidate whose lead over the default is confirmed."""
    admissible = {(a.model, a.runtime) for a in accuracy if a.admissible}
    rounds = int(result.config.get("interleaved_rounds", 1))
    batches = []
    for model in result.config["models"]:
        for b in result.config["batch_sizes"]:
            cases = [c for c in result.cases if c.model == model and c.batch_size == b]
            if not cases:
                continue  # a batch size this (fixed-batch) model does not take: listed in result.skipped
            default = next((c for c in cases if c.runtime == "onnxruntime"), None)
            if default is None:
                raise CnnkitError("--recommend needs ONNX Runtime among the runtimes (it is the default to beat)",
                                  hint="add onnxruntime to --runtime")
            pool = [c for c in cases if (model, case_label(c)) in admissible or c is default]
            fastest = min(pool, key=lambda c: c.stats.p50_ms)
            pick, ratio = default, 1.0
            if len(pool) > 1 and all(len(c.round_p50_ms) == rounds for c in pool) and rounds > 1:
                m = np.array([c.round_p50_ms for c in pool])
                base = pool.index(default)
                ratios = np.median(m / m[base], axis=1)
                # The fastest whose lead over the default the rounds confirm: the one with the lowest median
                # ratio may be a lucky one, and a slower but confirmed one still beats the default.
                for i in np.argsort(ratios, kind="stable"):
                    if i == base:
                        break
                    if ratio_interval(m[base], m[i], paired=True, seed=seed).confirmed_faster:
                        pick, ratio = pool[i], float(ratios[i])
                        break
            confirmed = pick is not default
            rejected = sorted({case_label(c) for c in cases} - {case_label(c) for c in pool})
            if confirmed:
                note = f"{1 - ratio:.0%} faster than the default in the paired rounds (confirmed)"
                if fastest is not pick:
                    note += f"; {case_label(fastest)} had the lowest median but the rounds do not confirm its lead"
            elif fastest is not default:
                note = (f"no confirmed lead: {case_label(fastest)} had the lowest median "
                        f"({fastest.stats.p50_ms:.4g} ms vs {default.stats.p50_ms:.4g} ms) but the rounds do not "
                        "confirm it; keep the default")
            else:
                note = "the default is the fastest"
            if rejected:
                note += f"; over the accuracy budget: {', '.join(rejected)}"
            batches.append(BatchRecommendation(
                model=model, batch_size=b, recommended=case_label(pick), confirmed=confirmed,
                fastest=case_label(fastest), default=case_label(default), p50_ms=pick.stats.p50_ms,
                default_p50_ms=default.stats.p50_ms, ratio_to_default=ratio, command=reproduce_command(result, pick),
                note=note,
            ))
    return Recommendation(SCHEMA, max_drop_pp, dataset, tuple(accuracy), tuple(batches), rounds)


def reproduce_command(result: BenchResult, case: BenchCase) -> str:
    """The ``cnnkit bench`` command that measures this case's configuration again on its own."""
    args = ["cnnkit", "bench", case.model, "--runtime", case_label(case), "--batch-sizes", str(case.batch_size)]
    session = result.config["session"]
    if case.runtime == "onnxruntime":
        chosen = result.chosen_trial(case.model, case.batch_size)
        options = chosen.options if chosen else session
        from cnnkit.runtimes.onnxruntime import recorded_info

        on_gpu = recorded_info(case.provider).on_gpu  # where it ran (a fallback ran on the CPU)
        if session["provider"] not in ("cpu", "CPUExecutionProvider"):
            args += ["--provider", session["provider"]]
        for key, value in session.get("provider_options", ()):
            args += ["--provider-option", f"{key}={value}"]
        return shlex.join(args) + " " + session_flags(options, on_gpu)
    if session.get("intra_op_threads"):
        args += ["--threads", str(session["intra_op_threads"])]
    if case.runtime == "litert" and result.config.get("tflite"):
        args += ["--tflite", result.config["tflite"]]
    return shlex.join(args)


def parse_candidates(text: str) -> tuple[RuntimeChoice, ...]:
    return candidate_runtimes(parse_runtimes(text))
