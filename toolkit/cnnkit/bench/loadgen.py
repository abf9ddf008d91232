"""MLPerf Inference's LoadGen drives cnnkit's runners: its test settings, the system under test (SUT) that serves
its queries, one test run into a log folder, and its own log files read back.

LoadGen (``pip install "cnnkit[loadgen]"``, imported as ``mlperf_loadgen`` only when a test runs) issues the
queries, times them and judges the run; cnnkit only answers. The SUT answers each sample with its top-1 class
as one little-endian int32, which is what LoadGen's accuracy log records. The figures cnnkit reports are read
from ``mlperf_log_summary.txt``, never recomputed.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.topk import top1

SCENARIOS = ("single-stream", "multi-stream", "server", "offline")
_LOADGEN_NAMES = {"single-stream": "SingleStream", "multi-stream": "MultiStream", "server": "Server",
                  "offline": "Offline"}
SUMMARY_FILE, DETAIL_FILE, ACCURACY_FILE = "mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"
MULTI_STREAM_SAMPLES = 8  # samples per MultiStream query, as MLPerf's edge rules fix it
# The percentile each scenario's latency is judged at (LoadGen's defaults: single-stream p90, the others p99).
SCENARIO_PERCENTILE = {"single-stream": 90.0, "multi-stream": 99.0, "server": 99.0}

Engine = Callable[[np.ndarray], np.ndarray]  # a batch of model inputs -> class scores (n, classes)


def parse_scenarios(text: str) -> tuple[str, ...]:
    """``single-stream,server`` -> the scenarios, in the order given; an unknown one is a one-line error."""
    out = []
    for item in (p.strip().lower().replace("_", "-") for p in text.split(",")):
        if not item:
            continue
        item = {"singlestream": "single-stream", "multistream": "multi-stream"}.get(item, item)
        if item not in SCENARIOS:
            raise CnnkitError(f"--scenario: unknown scenario '{item}'", hint=f"choose from {', '.join(SCENARIOS)}")
        out.append(item)
    if not out:
        raise CnnkitError(f"--scenario: no scenario in '{text}'", hint=f"choose from {', '.join(SCENARIOS)}")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class LatencyBound:
    """A latency percentile and its bound, as ``--latency-bound p99=20ms`` gives it."""

    percentile: float  # 99.0
    ms: float

    @classmethod
    def parse(cls, text: str) -> LatencyBound:
        m = re.fullmatch(r"\s*p(\d+(?:\.\d+)?)\s*=\s*(\d+(?:\.\d+)?)\s*(ms|us|s)?\s*", text.lower())
        if not m or not (0 < float(m.group(1)) < 100) or float(m.group(2)) <= 0:
            raise CnnkitError(f"--latency-bound: cannot read '{text}'",
                              hint="a percentile and a latency, e.g. --latency-bound p99=20ms")
        scale = {"ms": 1.0, "us": 1e-3, "s": 1e3, None: 1.0}[m.group(3)]
        return cls(float(m.group(1)), float(m.group(2)) * scale)

    @property
    def label(self) -> str:
        return f"p{self.percentile:g} <= {self.ms:g} ms"

    def to_dict(self) -> dict[str, float]:
        return {"percentile": self.percentile, "ms": self.ms}


@dataclass(frozen=True)
class TestPoint:
    """One LoadGen test: the scenario and the settings cnnkit gives LoadGen (everything else is LoadGen's
    default). ``expected_*``: hints LoadGen sizes the run with (the queries it pre-generates)."""

    scenario: str
    min_duration_ms: int
    min_query_count: int
    accuracy: bool = False
    target_qps: float | None = None  # server: the Poisson arrival rate
    bound: LatencyBound | None = None  # server: the latency bound LoadGen judges against
    expected_latency_ms: float | None = None  # single-/multi-stream
    expected_qps: float | None = None  # offline
    seed: int = 0  # LoadGen's rng seeds are left at 0 unless given: runs are reproducible

    def settings(self, lg: Any) -> Any:
        ts = lg.TestSettings()
        ts.scenario = getattr(lg.TestScenario, _LOADGEN_NAMES[self.scenario])
        ts.mode = lg.TestMode.AccuracyOnly if self.accuracy else lg.TestMode.PerformanceOnly
        ts.min_duration_ms = int(self.min_duration_ms)
        ts.min_query_count = int(self.min_query_count)
        if self.seed:
            ts.qsl_rng_seed = ts.sample_index_rng_seed = ts.schedule_rng_seed = int(self.seed)
        if self.scenario == "single-stream" and self.expected_latency_ms:
            ts.single_stream_expected_latency_ns = max(1, int(self.expected_latency_ms * 1e6))
        if self.scenario == "multi-stream":
            ts.multi_stream_samples_per_query = MULTI_STREAM_SAMPLES
            if self.expected_latency_ms:
                ts.multi_stream_expected_latency_ns = max(1, int(self.expected_latency_ms * 1e6))
        if self.scenario == "server":
            ts.server_target_qps = float(self.target_qps or 1.0)
            if self.bound is not None:
                ts.server_target_latency_ns = int(self.bound.ms * 1e6)
                ts.server_target_latency_percentile = self.bound.percentile / 100
        if self.scenario == "offline" and self.expected_qps:
            ts.offline_expected_qps = float(self.expected_qps)
        return ts

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "mode": "accuracy" if self.accuracy else "performance",
                "min_duration_ms": self.min_duration_ms, "min_query_count": self.min_query_count,
                "target_qps": self.target_qps, "bound": self.bound.to_dict() if self.bound else None,
                "expected_latency_ms": self.expected_latency_ms, "expected_qps": self.expected_qps, "seed": self.seed}


# --- the system under test ------------------------------------------------------------------------------


@dataclass
class ServeStats:
    """How the SUT served a test: the batches it ran (size -> count) and the samples it answered."""

    batches: collections.Counter = field(default_factory=collections.Counter)
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        n = sum(self.batches.values())
        return {"samples": self.samples, "batches": n, "mean_batch": round(self.samples / n, 3) if n else None,
                "largest_batch": max(self.batches) if self.batches else None,
                "batch_sizes": {str(k): v for k, v in sorted(self.batches.items())}}


def top1_answers(scores: np.ndarray) -> np.ndarray:
    """The response each sample gets: its top-1 class as little-endian int32 (ties: the lowest class index)."""
    return top1(scores).astype("<i4")


class QueryServer:
    """Answers LoadGen's queries with ``engines`` over ``samples`` (model inputs held in memory).

    ``inline``: the query is run in LoadGen's issuing thread and completed before the call returns (single- and
    multi-stream: one query in flight at a time, no hand-over to pay for). Otherwise the samples go to a queue
    that ``len(engines)`` worker threads serve, each taking whatever is waiting, up to ``max_batch`` samples, as
    one batch (server, offline). A failure in an engine completes the waiting queries empty (so LoadGen ends) and
    is raised once the test is over; so is an abort (Ctrl-C), after which no sample is run any more.
    """

    def __init__(self, engines: Sequence[Engine], samples: np.ndarray, max_batch: int, inline: bool,
                 answer: Callable[[np.ndarray], np.ndarray] = top1_answers) -> None:
        self.engines, self.samples, self.max_batch, self.inline = list(engines), samples, max(1, max_batch), inline
        self.answer = answer
        self.stats = ServeStats()
        self.error: BaseException | None = None
        self.aborted = threading.Event()
        self._queue: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # LoadGen's callbacks ------------------------------------------------------------------------------
    def issue(self, queries: list[Any]) -> None:
        if self.inline:
            for start in range(0, len(queries), self.max_batch):
                self._serve(self.engines[0], queries[start : start + self.max_batch])
            return
        with self._ready:
            self._queue.extend(queries)
            self._ready.notify_all()

    def flush(self) -> None:
        pass

    # serving ----------------------------------------------------------------------------------------
    def start(self) -> None:
        from cnnkit._deps import require_loadgen

        self._lg = require_loadgen()
        if self.inline:
            return
        self._stop = False
        self._threads = [threading.Thread(target=self._worker, args=(engine,), name=f"cnnkit-sut-{i}", daemon=True)
                         for i, engine in enumerate(self.engines)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        with self._ready:
            self._stop = True
            self._ready.notify_all()
        for t in self._threads:
            t.join()
        self._threads = []

    def _worker(self, engine: Engine) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stop:
                    self._ready.wait()
                if self._stop and not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._serve(engine, batch)

    def _serve(self, engine: Engine, queries: list[Any]) -> None:
        lg = self._lg
        answers: np.ndarray | None = None
        if self.error is None and not self.aborted.is_set():
            try:
                x = self.samples[[q.index for q in queries]]
                answers = np.ascontiguousarray(self.answer(engine(x)), dtype="<i4")
                if len(answers) != len(queries):
                    raise RuntimeError(f"the engine answered {len(answers)} samples for {len(queries)}")
            except BaseException as exc:  # noqa: BLE001 (raised after the test: LoadGen must see every query end)
                with self._lock:
                    self.error = self.error or exc
                answers = None
        if answers is None:  # an empty response ends the query; the run is then void (error or abort)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in queries])
            return
        with self._lock:
            self.stats.batches[len(queries)] += 1
            self.stats.samples += len(queries)
        item = answers.itemsize
        base = answers.ctypes.data
        # LoadGen copies the bytes (accuracy log) inside this call, so `answers` need only live until it returns.
        lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, base + i * item, item) for i, q in enumerate(queries)])


def run_test(server: QueryServer, point: TestPoint, out_dir: Path, name: str = "cnnkit") -> LoadgenSummary:
    """One LoadGen test of ``server`` at ``point``, its logs written into ``out_dir`` (made here); returns the
    summary LoadGen wrote. Ctrl-C stops serving at once; LoadGen then ends its run (its queries answered empty)
    and the KeyboardInterrupt is raised."""
    from cnnkit._deps import require_loadgen

    lg = require_loadgen()
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(server.samples)
    output = lg.LogOutputSettings()
    output.outdir = str(out_dir)
    output.copy_summary_to_stdout = False
    output.copy_detail_to_stdout = False
    log = lg.LogSettings()
    log.log_output = output
    log.enable_trace = False
    sut = lg.ConstructSUT(server.issue, server.flush)
    qsl = lg.ConstructQSL(n, n, lambda _s: None, lambda _s: None)  # every sample is in memory before timing
    settings = point.settings(lg)
    server.start()
    done = threading.Event()
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, log)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            failure.append(exc)
        finally:
            done.set()

    # LoadGen runs in its own thread so that Ctrl-C reaches this one (a signal is only handled between Python
    # bytecodes of the main thread, never while it sits in LoadGen's C++).
    driver = threading.Thread(target=drive, name=f"cnnkit-loadgen-{name}", daemon=True)
    driver.start()
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        # LoadGen cannot be stopped mid-test: serving stops (its queries are answered empty), its thread is left
        # to the process's exit, and the SUT and QSL stay alive for it.
        from cnnkit._deps import abandon_native_thread

        server.aborted.set()
        abandon_native_thread("MLPerf LoadGen's test")
        raise
    finally:
        server.stop()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    if failure:
        raise failure[0]
    if server.error is not None:
        raise server.error
    return read_summary(out_dir / SUMMARY_FILE, accuracy=point.accuracy, scenario=_LOADGEN_NAMES[point.scenario])


# --- LoadGen's logs, read back ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadgenSummary:
    """``mlperf_log_summary.txt``, parsed: what LoadGen judged and measured, as it wrote it.

    ``metrics``: the result lines (e.g. ``90.0th percentile latency (ns)``, ``Samples per second``);
    ``satisfied``: each ``... satisfied`` line (``Min duration``, ``Min queries``, ``Early stopping``,
    ``Performance constraints``); ``early_stopping``: the early-stopping bullets as written and
    ``early_stopping_estimates_ns`` the percentile estimates among them (``{"90.0": ns}``); ``stats``: the
    additional stats (latencies in ns, QPS); ``parameters``: the test parameters LoadGen used.
    """

    scenario: str
    mode: str
    valid: bool
    metrics: dict[str, float]
    satisfied: dict[str, bool]
    early_stopping: tuple[str, ...] = ()
    early_stopping_estimates_ns: dict[str, int] = field(default_factory=dict)
    recommendations: tuple[str, ...] = ()
    stats: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    warnings: str = ""
    errors: str = ""

    def reasons(self) -> tuple[str, ...]:
        """Why LoadGen judged the run INVALID, in its own words (empty when VALID)."""
        if self.valid:
            return ()
        out = [f"{name.lower()} not satisfied" for name, ok in self.satisfied.items() if not ok]
        out += [r for r in self.recommendations]
        if not self.satisfied.get("Early stopping", True):
            out += [b for b in self.early_stopping if not b.startswith("Run unsuccessful")]
        return tuple(out)

    def percentile_ns(self, percentile: float) -> float | None:
        """The latency at ``percentile`` among the additional stats (``99.00 percentile latency (ns)``)."""
        return self.stats.get(f"{percentile:.2f} percentile latency (ns)")

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


_SATISFIED = re.compile(r"^(.*?) satisfied\s*:\s*(\w+)")
_ESTIMATE = re.compile(r"Early stopping (\d+(?:\.\d+)?)th percentile estimate:\s*(\d+)")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_summary(text: str, source: str = "the summary", accuracy: bool = False,
                  scenario: str = "") -> LoadgenSummary:
    """``mlperf_log_summary.txt``'s text -> :class:`LoadgenSummary`; text that is not one is a CnnkitError.
    ``accuracy``: a run in accuracy mode, whose summary holds only its warnings and errors (LoadGen judges no
    accuracy run: ``valid`` says it ended without errors); ``scenario``: LoadGen's name for it."""
    section, bullets_for = "", None
    head: dict[str, str] = {}
    metrics: dict[str, float] = {}
    satisfied: dict[str, bool] = {}
    bullets: dict[str, list[str]] = {"early": [], "recommend": []}
    stats: dict[str, float] = {}
    params: dict[str, str] = {}
    warnings = errors = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or set(line) == {"="}:
            continue
        if line in ("MLPerf Results Summary", "Additional Stats", "Test Parameters Used"):
            section, bullets_for = line, None
            continue
        if "warning" in line.lower() and "encountered" in line.lower():
            warnings = line
            continue
        if "error" in line.lower() and "encountered" in line.lower():
            errors = line
            continue
        if section == "MLPerf Results Summary":
            if line == "Recommendations:":
                bullets_for = "recommend"
                continue
            if line == "Early Stopping Result:":
                bullets_for = "early"
                continue
            if bullets_for and line.startswith("* "):
                bullets[bullets_for].append(line[2:].strip())
                continue
            if bullets_for and raw.startswith(" ") and bullets[bullets_for]:  # a bullet's continued line
                bullets[bullets_for][-1] += " " + line
                continue
            m = _SATISFIED.match(line)
            if m:
                satisfied[m.group(1).strip()] = m.group(2).lower() == "yes"
                continue
            key, sep, value = line.partition(":")
            if sep:
                key, value = key.strip(), value.strip()
                number = _number(value)
                if key in ("SUT name", "Scenario", "Mode", "Result is") or number is None:
                    head[key] = value
                else:
                    metrics[key] = number
        elif section == "Additional Stats":
            key, sep, value = line.partition(":")
            number = _number(value.strip()) if sep else None
            if number is not None:
                stats[key.strip()] = number
        elif section == "Test Parameters Used":
            key, sep, value = line.partition(":")
            if sep:
                params[key.strip()] = value.strip()
    if accuracy and "Result is" not in head:
        return LoadgenSummary(scenario, "AccuracyOnly", errors.startswith("No errors"), {}, {}, warnings=warnings,
                              errors=errors)
    if "Result is" not in head or "Scenario" not in head:
        raise CnnkitError(f"{source} is not a LoadGen summary (no 'Result is' or 'Scenario' line)",
                          hint="the LoadGen run did not complete; run it again")
    estimates = {m.group(1): int(m.group(2)) for b in bullets["early"] for m in [_ESTIMATE.search(b)] if m}
    return LoadgenSummary(head["Scenario"], head.get("Mode", ""), head["Result is"] == "VALID", metrics, satisfied,
                          tuple(bullets["early"]), estimates, tuple(bullets["recommend"]), stats, params,
                          warnings, errors)


def read_summary(path: Path, accuracy: bool = False, scenario: str = "") -> LoadgenSummary:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CnnkitError(f"LoadGen wrote no summary at {path}: {exc.strerror or exc}",
                          hint="the LoadGen run did not complete; run it again") from None
    return parse_summary(text, str(path), accuracy, scenario)


def read_detail(path: Path) -> dict[str, Any]:
    """``mlperf_log_detail.txt``: LoadGen's ``:::MLLOG {json}`` lines -> key -> value (the last one wins)."""
    out: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        _, sep, payload = line.partition(":::MLLOG ")
        if sep:
            with_value = json.loads(payload)
            out[with_value["key"]] = with_value.get("value")
    return out


def read_accuracy_log(path: Path, samples: int) -> np.ndarray:
    """``mlperf_log_accuracy.json`` -> the int32 answer per sample index (-1: no answer logged)."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CnnkitError(f"cannot read LoadGen's accuracy log {path}: {exc}") from None
    answers = np.full(samples, -1, np.int64)
    for entry in entries:
        data = bytes.fromhex(entry["data"])
        if len(data) == 4:
            answers[int(entry["qsl_idx"])] = int(np.frombuffer(data, "<i4")[0])
    return answers


def loadgen_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("mlcommons-loadgen")
    except metadata.PackageNotFoundError:
        return None


def probe_engine(engine: Engine, samples: np.ndarray, batch: int, budget_s: float = 0.3) -> float:
    """Milliseconds one call of ``engine`` takes on ``batch`` samples (median of up to 20 calls within
    ``budget_s`` after two warm-up calls): the hints LoadGen sizes its runs with and the batching decision."""
    x = samples[np.arange(batch) % len(samples)]
    for _ in range(2):
        engine(x)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < 20 and (len(times) < 3 or time.perf_counter() - started < budget_s):
        t0 = time.perf_counter_ns()
        engine(x)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return float(np.median(times))
