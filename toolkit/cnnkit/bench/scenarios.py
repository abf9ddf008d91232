"""``cnnkit bench MODEL --scenario ...``: MLPerf Inference's four load scenarios, run by LoadGen on any runner.

single-stream (one query at a time; its p90 latency), multi-stream (queries of 8 samples, one at a time; their
p99), server (Poisson arrivals at ``--target-qps``, judged against a latency bound; ``--latency-bound`` alone
searches for the highest QPS LoadGen judges VALID) and offline (every sample at once; samples/s). With
``accuracy`` LoadGen runs its accuracy mode over the labelled set instead, and its accuracy is checked against
``cnnkit eval``'s on the same runtime.

The samples (the model's dataset, ``--data-dir`` images through the preprocessing record, or seeded synthetic
images) are model inputs in memory before any timing. Server and offline are served by worker threads, each
taking what is waiting up to ``max_batch`` samples as one batch (see :class:`cnnkit.bench.loadgen.QueryServer`).

Defaults are short, for a laptop (LoadGen's own minimum duration is 10 minutes): at least 5 s and 256 queries
per single-stream test, 662 per multi-stream and server test (the fewest for a p99 early-stopping bound with no
query over it); the result records every setting and whether LoadGen judged the run VALID under them, and why not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.bench.loadgen import (
    ACCURACY_FILE,
    MULTI_STREAM_SAMPLES,
    SCENARIO_PERCENTILE,
    SCENARIOS,
    Engine,
    LatencyBound,
    LoadgenSummary,
    QueryServer,
    TestPoint,
    loadgen_version,
    probe_engine,
    read_accuracy_log,
    run_test,
)
from cnnkit.errors import CnnkitError, DatasetError
from cnnkit.runtimes.registry import DEFAULT_RUNTIME, RuntimeChoice
from cnnkit.runtimes.sessions import SessionConfig

SCHEMA = "cnnkit.scenario/1"
RESULT_FILE = "scenario.json"
DEFAULT_MIN_DURATION_S = 5.0
DEFAULT_MIN_QUERIES = {"single-stream": 256, "multi-stream": 662, "server": 662, "offline": 1}
DEFAULT_BOUND = LatencyBound(99.0, 20.0)
DEFAULT_SAMPLES = 1024  # performance runs; accuracy mode takes the whole labelled set
BATCH_CANDIDATE = 8  # the batch dynamic batching is probed at (when --max-batch is not given)
BATCH_GAIN = 0.8  # batching is used where a batch costs at most this much per sample of batch 1's
MAX_SEARCH_POINTS = 8
SEARCH_TOLERANCE = 0.1  # the search stops once the highest valid and lowest invalid QPS are this close
OFFLINE_QPS_SHARE = 0.25  # of the probe's rate, told to LoadGen as offline's expected QPS (see _Runs.offline)
EXPECTED_LATENCY_SHARE = 0.25  # of the probe's latency, told to LoadGen as the streams' expected latency
SEARCH_POINT_MAX_S = 60.0  # the server search tries no QPS whose minimum queries take longer than this
RETRY_MAX_S = 60.0  # a point short of queries for early stopping is run again if that takes at most this long


@dataclass(frozen=True)
class ScenarioConfig:
    """Defaults: ONNX Runtime on the CPU; 1024 samples (accuracy: every labelled one); at least 5 s per test
    and :data:`DEFAULT_MIN_QUERIES`; the server bound p99 <= 20 ms, searched when no ``target_qps`` is given
    (up to 8 runs); dynamic batching up to 8 where a probe shows it pays; for server and offline, the workers
    the runtime wants: ONNX Runtime, one thread per usable core on one session; OpenVINO, one model compiled for
    throughput and one infer request per worker, as many as it asks for; LiteRT, one interpreter per usable
    core, the cores shared between them (``workers`` sets the count for any)."""

    model: Path
    scenarios: tuple[str, ...]
    out_dir: Path
    runtime: RuntimeChoice = DEFAULT_RUNTIME
    session: SessionConfig = field(default_factory=SessionConfig)
    tflite: Path | None = None
    dataset: str | None = None
    data_dir: Path | None = None
    samples: int | None = None
    target_qps: float | None = None
    bound: LatencyBound | None = None
    max_batch: int | None = None
    workers: int | None = None
    min_duration_s: float | None = None
    min_queries: int | None = None
    accuracy: bool = False
    search_points: int = MAX_SEARCH_POINTS
    seed: int = 0
    force: bool = False

    def __post_init__(self) -> None:
        if not self.scenarios or any(s not in SCENARIOS for s in self.scenarios):
            raise CnnkitError(f"--scenario: choose from {', '.join(SCENARIOS)}, got {', '.join(self.scenarios)}")
        for flag, value in (("--samples", self.samples), ("--max-batch", self.max_batch), ("--workers", self.workers),
                            ("--min-iterations", self.min_queries)):
            if value is not None and value <= 0:
                raise CnnkitError(f"{flag} must be positive, got {value}", hint=f"e.g. {flag} 8; leave it out for the default")
        if self.target_qps is not None and not (self.target_qps > 0 and math.isfinite(self.target_qps)):
            raise CnnkitError(f"--target-qps must be a positive number, got {self.target_qps}",
                              hint="queries per second for the server scenario, e.g. --target-qps 100")
        if self.min_duration_s is not None and not (self.min_duration_s > 0 and math.isfinite(self.min_duration_s)):
            raise CnnkitError(f"--min-time must be a positive number of seconds, got {self.min_duration_s}",
                              hint=f"LoadGen's minimum duration per test, e.g. --min-time {DEFAULT_MIN_DURATION_S:g} (the default)")
        if (self.target_qps is not None or self.bound is not None) and "server" not in self.scenarios:
            raise CnnkitError("--target-qps and --latency-bound set the server scenario, which is not among those given",
                              hint="add it: --scenario server")
        if self.search_points < 2:
            raise CnnkitError(f"the server search needs at least 2 points, got {self.search_points}")

    @property
    def server_bound(self) -> LatencyBound:
        return self.bound or DEFAULT_BOUND

    def min_duration_ms(self) -> int:
        return int(1000 * (self.min_duration_s if self.min_duration_s is not None else DEFAULT_MIN_DURATION_S))

    def min_query_count(self, scenario: str) -> int:
        return self.min_queries if self.min_queries is not None else DEFAULT_MIN_QUERIES[scenario]


# --- the workload: samples in memory, engines per worker ----------------------------------------------------


@dataclass
class Workload:
    """What a scenario run serves: ``samples`` (model inputs), their ``labels`` (None: synthetic), one engine per
    worker, what ran (``runner``) and how it is served (``serving``)."""

    samples: np.ndarray
    labels: np.ndarray | None
    source: dict[str, Any]
    engines: list[Engine]
    runner: dict[str, Any]
    serving: dict[str, Any]
    images: Any = None  # the ImageSource the samples came from (accuracy mode evaluates it with cnnkit eval)
    stream_engine: Engine | None = None  # single- and multi-stream (default: the first worker's engine)

    @property
    def stream(self) -> Engine:
        return self.stream_engine or self.engines[0]


def runner_record(runner: Any, choice: RuntimeChoice) -> dict[str, Any]:
    """What ran, as the runner reports it (its :class:`~cnnkit.runtimes.base.RunnerInfo`), under the runtime label."""
    return {"runtime": choice.label} | runner.info.to_dict()


def _engine(runner: Any) -> Engine:
    return _engine_of(runner.infer, runner.input_name)


def _engine_of(infer: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], name: str) -> Engine:
    def run(x: np.ndarray) -> np.ndarray:
        return next(iter(infer({name: x}).values()))

    return run


def load_samples(config: ScenarioConfig, say: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray | None, dict, Any]:
    """The samples as model inputs: ``--data-dir`` images or the model's (or ``--dataset``'s) dataset through
    the preprocessing record, else seeded synthetic images (said). Returns samples, labels, provenance, source."""
    from cnnkit.data.datasets import model_dataset
    from cnnkit.data.preprocess import record_for_model
    from cnnkit.data.sources import model_class_names, open_images
    from cnnkit.graph.info import describe_onnx

    info = describe_onnx(config.model)
    limit = config.samples if config.samples is not None else (None if config.accuracy else DEFAULT_SAMPLES)
    if config.data_dir is None and config.dataset is None and model_dataset(config.model) is None:
        if config.accuracy:
            raise DatasetError(f"{config.model.name} names no dataset, and accuracy mode needs labelled images",
                               hint="pass --data-dir with one subfolder per class, or --dataset NAME")
        from cnnkit.bench.inputs import make_input

        n = limit or DEFAULT_SAMPLES
        say(f"{config.model.name} names no dataset: serving {n} seeded synthetic images (seed {config.seed})")
        return make_input(info, n, config.seed), None, {"kind": "synthetic", "seed": config.seed, "samples": n}, None
    record, note = record_for_model(info)
    if note:
        say(f"{config.model.name}: {note}")
    names, names_from = model_class_names(info.metadata)
    source = open_images(config.dataset, config.data_dir, "test", names, names_from, model=config.model,
                         model_classes=info.classes)
    if source.notice:
        say(source.notice)
    if config.accuracy and not source.labelled:
        raise DatasetError(f"{source.provenance.get('source')} holds unlabelled images; accuracy mode needs labels",
                           hint="put the images in one subfolder per class (the folder name is the class)")
    source = source.take(limit)
    pixels, labels = source.load(record)
    if len(pixels) == 0:
        raise DatasetError(f"{source.provenance.get('source')}: no images to serve")
    return record.normalize(pixels), labels if source.labelled else None, source.describe(), source


def prepare_workload(config: ScenarioConfig, say: Callable[[str], None] = lambda _m: None) -> Workload:
    """Samples in memory and the runners that serve them (see :class:`ScenarioConfig` for the workers)."""
    from cnnkit.envinfo import cpu_info
    from cnnkit.runtimes.registry import create_runner

    samples, labels, provenance, source = load_samples(config, say)
    cores = cpu_info()["usable_cores"] or 1
    parallel = any(s in ("server", "offline") for s in config.scenarios)
    streams = any(s in ("single-stream", "multi-stream") for s in config.scenarios)
    if parallel and config.runtime.runtime == "openvino":
        # OpenVINO serves concurrent requests itself: one model compiled for throughput (its streams), one infer
        # request per worker, as many as it asks for unless --workers says otherwise.
        first = create_runner(config.runtime, config.model, config.session, config.tflite, throughput=True)
        engines = [_engine_of(infer, first.input_name) for infer in first.request_engines(config.workers)]
        stream = create_runner(config.runtime, config.model, config.session, config.tflite) if streams else first
        options = first.info.options
        serving = {"workers": len(engines), "runners": 1, "threads_per_runner": config.session.intra_op_threads or None,
                   "streams": options.get("streams"), "infer_requests": len(engines),
                   "how": f"{len(engines)} worker(s) on one OpenVINO model compiled for throughput: "
                          f"{options.get('streams')} stream(s), one infer request per worker",
                   "inline": "single-stream and multi-stream queries run in LoadGen's issuing thread, one at a time"
                             + (", on a model compiled for latency" if streams else "")}
        return Workload(samples, labels, provenance, engines, runner_record(first, config.runtime), serving, source,
                        None if stream is first else _engine(stream))
    workers = config.workers or (cores if parallel else 1)
    shared = config.runtime.runtime == "onnxruntime"  # one session is thread-safe; LiteRT gets one each
    threads = config.session.intra_op_threads
    if not shared and workers > 1 and not threads:
        threads = max(1, cores // workers)
    session = replace(config.session, intra_op_threads=threads)
    first = create_runner(config.runtime, config.model, session, config.tflite)
    runners = [first] * workers if shared else [first, *(create_runner(config.runtime, config.model, session, config.tflite)
                                                       for _ in range(workers - 1))]
    # The streams run one query at a time: their runner keeps every thread the config gives (not a worker's share).
    stream = first if shared or threads == config.session.intra_op_threads or not streams else \
        create_runner(config.runtime, config.model, config.session, config.tflite)
    serving = {"workers": workers, "runners": 1 if shared else workers,
               "threads_per_runner": threads or None,
               "how": (f"{workers} worker thread(s) on one ONNX Runtime session" if shared else
                       f"{workers} worker(s), one {config.runtime.runtime} runner each"
                       + (f" with {threads} thread(s)" if threads else "")),
               "inline": "single-stream and multi-stream queries run in LoadGen's issuing thread, one at a time"
                         + ("" if stream is first else f", on a runner of their own with {config.session.intra_op_threads or 'the runtime default'} threads")}
    return Workload(samples, labels, provenance, [_engine(r) for r in runners], runner_record(first, config.runtime),
                    serving, source, None if stream is first else _engine(stream))


def choose_batching(config: ScenarioConfig, workload: Workload) -> dict[str, Any]:
    """The largest batch a worker takes, and why: ``--max-batch`` as given, else 8 where a probe shows a batch
    of 8 costs at most 0.8x batch 1's time per sample, else 1. The probe's batch-1 time sizes LoadGen's runs."""
    engine = workload.engines[0]
    one_ms = probe_engine(engine, workload.samples, 1)
    out: dict[str, Any] = {"batch_1_ms": round(one_ms, 4)}
    candidate = min(config.max_batch or BATCH_CANDIDATE, len(workload.samples))
    if candidate > 1:
        many_ms = probe_engine(engine, workload.samples, candidate)
        out[f"batch_{candidate}_ms"] = round(many_ms, 4)
        ratio = many_ms / candidate / one_ms if one_ms > 0 else 1.0
        out["per_sample_ratio"] = round(ratio, 3)
    else:
        many_ms, ratio = one_ms, 1.0
    if config.max_batch is not None:
        out.update(max_batch=config.max_batch, why="--max-batch as given")
    elif ratio <= BATCH_GAIN:
        out.update(max_batch=candidate, why=f"a batch of {candidate} costs {ratio:.3g}x batch 1's time per sample")
    else:
        out.update(max_batch=1, why=f"a batch of {candidate} costs {ratio:.3g}x batch 1's time per sample: "
                                    f"batching does not pay (it would at <= {BATCH_GAIN:g}x)")
    per_sample_ms = min(one_ms, many_ms / candidate) if out["max_batch"] > 1 else one_ms
    # One engine's rate on the probe: an upper bound (the SUT path and LoadGen add to every sample).
    out["capacity_estimate_qps"] = round(1000 / per_sample_ms, 1) if per_sample_ms > 0 else None
    out["multi_stream_query_ms"] = round(probe_engine(engine, workload.samples, MULTI_STREAM_SAMPLES, 0.2), 4) \
        if "multi-stream" in config.scenarios else None
    return out


# --- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioRun:
    """One LoadGen test: its settings (``point``), LoadGen's summary as written, its verdict and why, the log
    folder (relative to the result's folder) and how the SUT served it. ``accuracy`` (accuracy mode): LoadGen's
    accuracy from its accuracy log, ``cnnkit eval``'s on the same runtime, and whether they agree."""

    scenario: str
    mode: str
    point: dict[str, Any]
    summary: LoadgenSummary
    valid: bool
    reasons: tuple[str, ...]
    log_dir: str
    served: dict[str, Any]
    wall_s: float
    accuracy: dict[str, Any] | None = None

    @property
    def percentile(self) -> float | None:
        """The latency percentile the scenario is judged at (None for offline)."""
        bound = self.point.get("bound")
        return bound["percentile"] if bound else SCENARIO_PERCENTILE.get(self.scenario)

    def latency_ms(self, percentile: float | None = None) -> float | None:
        """LoadGen's latency at ``percentile`` (default: the scenario's) in ms; None where it reports none."""
        p = percentile if percentile is not None else self.percentile
        ns = self.summary.percentile_ns(p) if p is not None else None
        return ns / 1e6 if ns is not None else None

    def early_stopping_ms(self) -> float | None:
        """LoadGen's early-stopping estimate of the scenario's percentile (single- and multi-stream), in ms."""
        p = self.percentile
        ns = self.summary.early_stopping_estimates_ns.get(f"{p:.1f}") if p is not None else None
        return ns / 1e6 if ns is not None else None

    @property
    def qps(self) -> float | None:
        """Samples per second as LoadGen reports it for the scenario (server: completed; offline: samples/s;
        the streams: QPS without LoadGen's overhead)."""
        m, s = self.summary.metrics, self.summary.stats
        for key in ("Completed samples per second", "Samples per second"):
            if key in m:
                return m[key]
        return s.get("QPS w/o loadgen overhead")

    @property
    def target_qps(self) -> float | None:
        return self.point.get("target_qps")


@dataclass(frozen=True)
class ServerSearch:
    """The search for the highest server QPS LoadGen judges VALID under ``bound``: every point tried (indices into
    the result's runs, in order), the best one (None: none was valid) and why it stopped."""

    bound: dict[str, float]
    runs: tuple[int, ...]
    best_run: int | None
    best_qps: float | None
    stopped: str


@dataclass(frozen=True)
class ScenarioResult:
    schema: str
    model: str
    runtime: str
    runner: dict[str, Any]
    samples: dict[str, Any]
    serving: dict[str, Any]
    batching: dict[str, Any]
    runs: tuple[ScenarioRun, ...]
    searches: tuple[ServerSearch, ...]
    environment: dict[str, Any]
    loadgen_version: str | None
    created_at: str
    out_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the result") -> ScenarioResult:
        from cnnkit.results.load import from_dict

        return from_dict(data, source, expect=SCHEMA)

    @property
    def accuracy_failed(self) -> list[ScenarioRun]:
        return [r for r in self.runs if r.accuracy is not None and not r.accuracy["matches"]]


# --- running -----------------------------------------------------------------------------------------------


class _Runs:
    """Runs LoadGen tests into the staging folder, one log folder each."""

    def __init__(self, config: ScenarioConfig, workload: Workload, batching: dict[str, Any], staging: Path,
                 progress: Callable[[str, int, int], None]) -> None:
        self.config, self.workload, self.batching, self.staging, self.progress = config, workload, batching, staging, progress
        self.runs: list[ScenarioRun] = []

    def point(self, scenario: str, target_qps: float | None = None) -> TestPoint:
        c, b = self.config, self.batching
        return TestPoint(
            scenario, c.min_duration_ms(), c.min_query_count(scenario), accuracy=c.accuracy, target_qps=target_qps,
            bound=c.server_bound if scenario == "server" else None,
            # Streams: LoadGen pre-generates min duration / expected latency queries and stops once the minimums
            # are met, so a low guess only costs memory, while a high one ends the run short of its min duration.
            expected_latency_ms=EXPECTED_LATENCY_SHARE * (b["multi_stream_query_ms"] if scenario == "multi-stream"
                                                          else b["batch_1_ms"]),
            # Offline: LoadGen puts min duration x expected QPS samples in its one query (see offline()).
            expected_qps=OFFLINE_QPS_SHARE * (b["capacity_estimate_qps"] or 1000) if scenario == "offline" else None,
            seed=c.seed)

    def run(self, point: TestPoint, what: str) -> ScenarioRun:
        name = point.scenario + (f"-qps-{point.target_qps:g}" if point.target_qps is not None and point.scenario == "server" else "")
        name += "-accuracy" if point.accuracy else ""
        if (self.staging / name).exists():  # the same point again: its own logs
            name += f"-{sum(1 for r in self.runs if r.log_dir.startswith(name)) + 1}"
        log_dir = self.staging / name
        self.progress(what, len(self.runs), 0)
        inline = point.scenario in ("single-stream", "multi-stream")
        engines = [self.workload.stream] if inline else self.workload.engines
        server = QueryServer(engines, self.workload.samples, self.batching["max_batch"], inline)
        started = time.perf_counter()
        summary = run_test(server, point, log_dir, name)
        accuracy = self.check_accuracy(log_dir) if point.accuracy else None
        valid, reasons = summary.valid, summary.reasons()
        if accuracy is not None:  # LoadGen judges no accuracy run: its verdict is the check against eval
            valid = summary.valid and accuracy["matches"]
            reasons = () if valid else (summary.errors,) if not summary.valid else (
                f"LoadGen's accuracy {100 * accuracy['loadgen_accuracy']:.2f} % differs from cnnkit eval's "
                f"{100 * accuracy['eval_accuracy']:.2f} %" + (f" ({accuracy['confusion_cells_moved']} answer(s) moved "
                                                              "in the confusion matrix)"
                                                              if accuracy["confusion_cells_moved"] else ""),)
        run = ScenarioRun(point.scenario, "accuracy" if point.accuracy else "performance", point.to_dict(), summary,
                          valid, reasons, name, server.stats.to_dict(), round(time.perf_counter() - started, 3),
                          accuracy)
        self.runs.append(run)
        return run

    def check_accuracy(self, log_dir: Path) -> dict[str, Any]:
        """LoadGen's accuracy log against the labels, and ``cnnkit eval``'s accuracy on the same images and runtime."""
        from cnnkit.evaluate.accuracy import EvalConfig, confusion_matrix, evaluate_models

        labels = self.workload.labels
        answers = read_accuracy_log(log_dir / ACCURACY_FILE, len(labels))
        missing = int((answers < 0).sum())
        correct = int((answers == labels).sum())
        c = self.config
        self.progress("cnnkit eval on the same images, for the accuracy check", len(self.runs), 0)
        evaluated = evaluate_models(EvalConfig((c.model,), session=c.session, runtime=c.runtime, tflite=c.tflite),
                                    dataset=self.workload.images).models[0]
        eval_correct = int(round(evaluated.accuracy * evaluated.samples))
        same = missing == 0 and correct == eval_correct and evaluated.samples == len(labels)
        differing = None
        if evaluated.confusion and missing == 0:
            # Per (true, predicted) class: a wrong answer moved to another wrong class still shows.
            ours = confusion_matrix(labels, answers, len(evaluated.confusion))
            differing = int(np.abs(ours - np.asarray(evaluated.confusion)).sum() // 2)
            same = same and differing == 0
        return {"samples": int(len(labels)), "loadgen_accuracy": correct / len(labels), "loadgen_correct": correct,
                "unanswered": missing, "eval_accuracy": evaluated.accuracy, "eval_correct": eval_correct,
                "eval_samples": evaluated.samples, "confusion_cells_moved": differing, "matches": same}

    def offline(self, label: str, min_duration_ms: int | None = None) -> ScenarioRun:
        """An offline run. Its one query holds min duration x expected QPS samples: too many make the run long
        (the probe times the engine alone, far above what is served), too few end it before its min duration.
        So it starts from a quarter of the probe's rate and, where LoadGen finds the min duration not met, runs
        once more expecting 1.3x the rate it measured (both runs kept; the last one counts)."""
        point = self.point("offline")
        if min_duration_ms is not None:
            point = replace(point, min_duration_ms=min_duration_ms)
        run = self.run(point, label)
        if not run.valid and run.summary.satisfied.get("Min duration") is False and run.qps and not point.accuracy:
            run = self.run(replace(point, expected_qps=1.3 * run.qps),
                           f"{label}, again: the first query ended before the min duration")
        return run

    def offline_qps(self) -> tuple[float, int]:
        """Samples/s of an offline run (the one already made, else a short one made now and kept with the
        runs): no server rate above it can be sustained, so the search starts below it."""
        for i in reversed(range(len(self.runs))):
            run = self.runs[i]
            if run.scenario == "offline" and run.mode == "performance" and run.qps:
                return run.qps, i
        run = self.offline("offline calibration for the server search", min(self.config.min_duration_ms(), 1000))
        return run.qps or 1.0, len(self.runs) - 1

    def search(self, bound: LatencyBound) -> ServerSearch:
        """The highest QPS whose LoadGen server run is VALID under ``bound``: from 0.6x the offline samples/s,
        doubling until a run fails, then bisecting until the valid and invalid QPS are within 10 %, at most
        ``search_points`` QPS tried. A point INVALID only for want of queries for early stopping is run again
        with as many as LoadGen says it needs (where that takes at most a minute)."""
        lo, hi = 0.0, math.inf
        best: int | None = None
        offline, _ = self.offline_qps()
        q = _round_qps(0.6 * offline)
        tried: list[int] = []
        stopped = f"{self.config.search_points} points tried"
        for i in range(self.config.search_points):
            point = self.point("server", q)
            if point.min_query_count / q > SEARCH_POINT_MAX_S:  # low rates: the minimum queries take minutes
                stopped = (f"the next point, {q:g} QPS, would take {point.min_query_count / q:.0f} s for its "
                           f"{point.min_query_count} queries (the search runs none over {SEARCH_POINT_MAX_S:.0f} s)")
                break
            run = self.run(point, f"server search, point {i + 1} of <= {self.config.search_points}: "
                                                    f"{q:g} QPS, {bound.label}")
            tried.append(len(self.runs) - 1)
            more = _early_stopping_shortfall(run)
            if more is not None and more / q <= RETRY_MAX_S:
                # Within the bound, short of queries for LoadGen's early-stopping estimate: it says how many more
                # would do if none of them were late; the same QPS is run again that long (another point, kept).
                point = replace(self.point("server", q), min_query_count=more)
                run = self.run(point, f"server search, point {i + 1} again with {more} queries (LoadGen: early "
                                      f"stopping needs them): {q:g} QPS, {bound.label}")
                tried.append(len(self.runs) - 1)
            if run.valid and q > lo:
                lo, best = q, len(self.runs) - 1
            elif not run.valid:
                hi = min(hi, q)
            if hi == math.inf:
                q = _round_qps(2 * q)
                continue
            if lo > 0 and (hi - lo) <= SEARCH_TOLERANCE * lo:
                stopped = f"highest valid and lowest invalid QPS within {SEARCH_TOLERANCE:.0%}"
                break
            nxt = _round_qps((lo + hi) / 2 if lo > 0 else hi / 2)
            if nxt < 0.5:
                stopped = "no valid QPS down to 0.5"
                break
            if nxt in (lo, hi):
                stopped = "QPS resolution reached"
                break
            q = nxt
        return ServerSearch(bound.to_dict(), tuple(tried), best, lo if best is not None else None, stopped)


def _early_stopping_shortfall(run: ScenarioRun) -> int | None:
    """The queries a server run needs in all for LoadGen's early stopping, where that alone made it INVALID (the
    latency bound held, the durations and counts were met) and LoadGen names the shortfall; else None."""
    import re

    s = run.summary
    failed = [name for name, ok in s.satisfied.items() if not ok]
    if run.valid or failed != ["Early stopping"]:
        return None
    text = " ".join(s.early_stopping)
    done = re.search(r"Processed (\d+) queries", text)
    need = re.search(r"at least (\d+) more queries", text)
    if not done or not need:
        return None
    return int(done.group(1)) + int(need.group(1))


def _round_qps(q: float) -> float:
    """Three significant digits: a QPS a person can read and type back as --target-qps."""
    if q <= 0:
        return 0.0
    digits = 2 - int(math.floor(math.log10(q)))
    return float(round(q, digits)) if digits > 0 else float(round(q, digits))


def run_scenarios(config: ScenarioConfig, progress: Callable[[str, int, int], None] | None = None,
                  notify: Callable[[str], None] | None = None, workload: Workload | None = None) -> ScenarioResult:
    """Each scenario of ``config`` as LoadGen tests; the result (``scenario.json``) and LoadGen's logs go to
    ``config.out_dir`` together, staged: a failure or Ctrl-C leaves no folder behind. ``workload``: serve these
    samples and engines instead of preparing them from the config."""
    from cnnkit._deps import require_loadgen
    from cnnkit.envinfo import environment
    from cnnkit.io import check_output_dir, staged_dir, write_json_atomic

    require_loadgen()  # before loading anything: a missing extra is the first thing to say
    check_output_dir(Path(config.out_dir), config.force)
    say = notify or (lambda _m: None)
    report = progress or (lambda _w, _d, _t: None)
    if workload is None:
        report("loading samples and building runners", 0, 0)
        workload = prepare_workload(config, say)
    if config.accuracy and workload.labels is None:
        raise DatasetError("accuracy mode needs labelled samples", hint="pass --data-dir with one subfolder per class")
    report("probing the runner (batching, LoadGen's hints)", 0, 0)
    batching = choose_batching(config, workload)
    searches: list[ServerSearch] = []
    with staged_dir(Path(config.out_dir), config.force) as staging:
        runs = _Runs(config, workload, batching, staging, report)
        # Offline first where asked: the server search starts from its samples/s.
        for scenario in sorted(config.scenarios, key=lambda s: s != "offline" or "server" not in config.scenarios):
            label = f"{scenario}{' (accuracy mode)' if config.accuracy else ''}"
            if scenario == "server" and config.target_qps is None and not config.accuracy:
                searches.append(runs.search(config.server_bound))
            elif scenario == "server":
                qps = config.target_qps or _round_qps(0.5 * (batching["capacity_estimate_qps"] or 100))
                runs.run(runs.point("server", qps), f"{label} at {qps:g} QPS, {config.server_bound.label}")
            elif scenario == "offline":
                runs.offline(label)
            else:
                runs.run(runs.point(scenario), label)
        result = ScenarioResult(SCHEMA, str(config.model), config.runtime.label, workload.runner, workload.source,
                                workload.serving, batching, tuple(runs.runs), tuple(searches), environment(),
                                loadgen_version(), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                str(config.out_dir))
        write_json_atomic(staging / RESULT_FILE, result.to_dict())
    return result
