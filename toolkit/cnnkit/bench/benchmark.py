"""Latency and throughput of ONNX models in ONNX Runtime, measured honestly.

Method: inputs are generated before timing; each input shape is warmed up on its own (a new shape costs
extra, on CUDA a lot); every inference is timed on its own with ``time.perf_counter_ns`` and kept; timing
runs until both a minimum count and a minimum time are met. What is timed is the runner's own timed call
(:meth:`cnnkit.runtimes.base.Runner.timed_call`): on a GPU the inputs and outputs are bound on the device
(IO binding), so host<->device copies are measured only with ``include_copies``. Statistics are
derived from the kept samples; every result carries the environment it was measured in.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.bench.concurrency import ConcurrencyPoint
from cnnkit.bench.extras import extra_steps, measure_extras
from cnnkit.bench.inputs import input_record, make_input
from cnnkit.bench.memory import ColdStartResult, MemoryResult
from cnnkit.bench.profile import OperatorProfile
from cnnkit.choices import CudnnConvAlgoSearch, ExecutionMode, GraphOptimization, check_engine
from cnnkit.envinfo import cpu_info, environment, gpu_info
from cnnkit.errors import CnnkitError
from cnnkit.graph.info import OnnxModelInfo, describe_onnx
from cnnkit.runtimes.base import Runner, RunnerInfo, TimedCall, runtime_versions
from cnnkit.runtimes.registry import DEFAULT_RUNTIME, RuntimeChoice, create_runner
from cnnkit.runtimes.sessions import SessionConfig
from cnnkit.stats import LatencyStats, fastest_confirmed

SCHEMA = "cnnkit.bench/1"
DEFAULT_BATCH_SIZES = (1, 8, 32, 64, 128, 256)
DEFAULT_WARMUP, DEFAULT_MIN_TIME_S, DEFAULT_MIN_ITERATIONS = 10, 1.0, 50


@dataclass(frozen=True)
class RecommendConfig:
    """``bench --recommend`` (see :mod:`cnnkit.bench.recommend`). Defaults: a candidate may lose 0.1 points of
    top-1 accuracy against the default, on the model's own dataset; 10 interleaved rounds."""

    max_accuracy_drop: float = 0.1  # percentage points
    dataset: str | None = None  # None: the dataset the model's metadata names
    data_dir: Path | None = None
    rounds: int = 10  # a lead must show round by round, so more rounds than a plain bench's

    def __post_init__(self) -> None:
        if not (0 <= self.max_accuracy_drop < 100):  # NaN fails too
            raise CnnkitError(f"--max-accuracy-drop must be between 0 and 100 points, got {self.max_accuracy_drop}",
                              hint="percentage points of top-1 accuracy, e.g. --max-accuracy-drop 0.5")
        if self.rounds < 2:
            raise CnnkitError(f"--recommend needs at least 2 interleaved rounds, got {self.rounds}")


@dataclass(frozen=True)
class BenchConfig:
    """Defaults: CPU; batch sizes, warm-up runs, minimum runs and time per shape fitted to the model's MACs
    (:func:`fit_defaults`; for a small model: batches 1..256, 10 warm-up runs, >= 50 runs and >= 1 s per shape);
    on this machine (``engine`` local). A value given explicitly is kept as given."""

    models: tuple[Path, ...]
    batch_sizes: tuple[int, ...] | None = None  # None: fitted to the model
    session: SessionConfig = field(default_factory=SessionConfig)
    warmup: int | None = None
    min_time_s: float | None = None
    min_iterations: int | None = None
    include_copies: bool = False
    tune: bool = False
    tune_time_s: float = 0.3  # per trial while tuning; the winner is then measured with min_time_s
    seed: int = 0
    runtimes: tuple[RuntimeChoice, ...] = (DEFAULT_RUNTIME,)  # every model on each, interleaved
    tflite: Path | None = None  # LiteRT's model; default: the .tflite beside each .onnx
    rounds: int = 5  # interleaved rounds when more than one model x runtime is measured
    # Beside latency (see cnnkit.bench.extras); all off by default.
    profile: bool = False  # ONNX Runtime's operator profile per model and batch size, on a separate session
    profile_runs: int = 10
    memory: bool = False  # RSS in fresh processes, arena on and off
    memory_runs: int = 5  # runs per batch size in the memory process
    cold_start: bool = False  # fresh processes timing session creation and first inference (median reported)
    cold_start_runs: int = 5  # such processes
    concurrency: tuple[int, ...] = ()  # requests in flight, e.g. (1, 2)
    recommend: RecommendConfig | None = None  # name the runtime x precision to deploy (local engine only)
    engine: str = "local"  # or "ray": the same benchmark on every selected node of a Ray cluster
    address: str | None = None  # engine ray: the cluster (default: $RAY_ADDRESS, else a local one)
    nodes: str | None = None  # engine ray: "all" or LABEL=VALUE (default: all)

    def __post_init__(self) -> None:
        if not self.models:
            raise CnnkitError("no model given", hint="cnnkit bench MODEL.onnx [MORE.onnx ...]")
        if self.batch_sizes is not None and (not self.batch_sizes or any(b <= 0 for b in self.batch_sizes)):
            raise CnnkitError(f"--batch-sizes must be positive integers, got {list(self.batch_sizes)}",
                              hint="e.g. --batch-sizes 1,8,64")
        if self.warmup is not None and self.warmup < 0:
            raise CnnkitError(f"--warmup must be >= 0, got {self.warmup}", hint="untimed runs per shape, e.g. --warmup 10 (the default); 0: none")
        if self.min_iterations is not None and self.min_iterations <= 0:
            raise CnnkitError(f"--min-iterations must be positive, got {self.min_iterations}", hint="timed runs per shape, at least, e.g. --min-iterations 50")
        if self.min_time_s is not None and not (self.min_time_s >= 0 and math.isfinite(self.min_time_s)):
            raise CnnkitError(f"--min-time must be a non-negative number of seconds, got {self.min_time_s}",
                              hint="seconds of timed runs per shape, e.g. --min-time 1 (the default); 0: --min-iterations alone")
        if not self.runtimes:
            raise CnnkitError("no runtime given", hint="--runtime onnxruntime,openvino,litert")
        if self.tflite is not None and len(self.models) > 1:
            raise CnnkitError("--tflite names one model's .tflite, but several models were given",
                              hint="put each model's .tflite beside its .onnx (same name) instead")
        for flag, value in (("--profile-runs", self.profile_runs), ("--memory-runs", self.memory_runs),
                            ("--cold-start-runs", self.cold_start_runs)):
            if value <= 0:
                raise CnnkitError(f"{flag} must be positive, got {value}", hint=f"e.g. {flag} 5")
        if any(n <= 0 for n in self.concurrency):
            raise CnnkitError(f"--concurrency must be positive integers, got {list(self.concurrency)}",
                              hint="e.g. --concurrency 1,2,4, or --concurrency sweep")
        asked = [flag for flag, on in (("--profile", self.profile), ("--memory", self.memory),
                                       ("--cold-start", self.cold_start), ("--concurrency", bool(self.concurrency))) if on]
        # --recommend adds ONNX Runtime (the default to beat) to the runtimes it compares.
        if asked and self.recommend is None and not any(r.runtime == "onnxruntime" for r in self.runtimes):
            raise CnnkitError(f"{', '.join(asked)} measure ONNX Runtime, which is not among the runtimes given",
                              hint="add it: --runtime onnxruntime," + ",".join(r.label for r in self.runtimes))
        if check_engine(self.engine) == "ray" and self.recommend is not None:
            raise CnnkitError("--recommend runs on this machine only", hint="drop --engine ray, or --recommend")
        if self.engine != "ray" and self.nodes is not None:  # (--address may come from $RAY_ADDRESS: not checked)
            raise CnnkitError("--nodes needs --engine ray", hint="add --engine ray, or drop --nodes")

    @property
    def cold_starts(self) -> int:
        """Fresh processes for the cold start (0: not measured)."""
        return self.cold_start_runs if self.cold_start else 0

    def entries(self) -> list[tuple[Path, RuntimeChoice]]:
        """What is measured: every model on every runtime, in the order given."""
        return [(Path(m), r) for m in self.models for r in self.runtimes]


@dataclass(frozen=True)
class BenchCase:
    """One model on one runtime and provider, in one precision, at one batch size.

    ``round_p50_ms``: the median of each interleaved round (one state of a shared machine each), for paired
    comparisons; ``runtime``: onnxruntime, openvino or litert; ``provider``: what ran it, with its options.
    """

    model: str
    model_sha256: str
    precision: str
    batch_size: int
    provider: dict[str, Any]  # RunnerInfo.provider_record(): requested, active, fallback and why, options
    stats: LatencyStats
    samples_ns: tuple[int, ...]
    warmup: int
    session_create_ms: float
    first_inference_ms: float
    peak_rss_mb: float  # the process's peak resident memory after this case
    io_binding: bool
    include_copies: bool
    tuned: bool = False
    runtime: str = "onnxruntime"
    round_p50_ms: tuple[float, ...] = ()


@dataclass(frozen=True)
class TuneTrial:
    """One candidate's measurement while tuning; ``error`` says why a candidate could not run at all.

    ``ratio_to_base``: its median over the median of the options the run was given; ``chosen``: the options
    the benchmark then used (the fastest, when the samples confirm that it beats the given options).
    """

    model: str
    batch_size: int
    options: dict[str, Any]
    p50_ms: float | None
    count: int
    error: str | None = None
    ratio_to_base: float | None = None
    chosen: bool = False


@dataclass(frozen=True)
class SkippedCase:
    """A batch size a model was not measured at, and why (a fixed-batch model takes no other)."""

    model: str
    batch_size: int
    reason: str
    hint: str | None = None


@dataclass(frozen=True)
class BenchResult:
    schema: str
    created: str
    config: dict[str, Any]
    environment: dict[str, Any]
    cases: tuple[BenchCase, ...]
    trials: tuple[TuneTrial, ...] = ()
    # Measured apart from the latency runs (absent from results written before they existed).
    profiles: tuple[OperatorProfile, ...] = ()
    memory: tuple[MemoryResult, ...] = ()
    cold_start: tuple[ColdStartResult, ...] = ()
    concurrency: tuple[ConcurrencyPoint, ...] = ()
    skipped: tuple[SkippedCase, ...] = ()
    # ``bench --recommend``: a cnnkit.recommend/1 record (a dict here, since cnnkit.bench.recommend imports this module).
    recommendation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def chosen_trial(self, model: str, batch_size: int) -> TuneTrial | None:
        """The tuned options used for ``model`` at ``batch_size`` (None without ``--tune``)."""
        return next((t for t in self.trials if t.model == str(model) and t.batch_size == batch_size and t.chosen), None)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the result") -> BenchResult:
        from cnnkit.results.load import from_dict

        return from_dict(data, source, expect=SCHEMA)

    @classmethod
    def load(cls, path: str | Path) -> BenchResult:
        from cnnkit.results.load import load_result

        return load_result(path, expect=SCHEMA)


ProgressCallback = Callable[[str, int, int], None]  # (what is being measured, steps done, steps in all)


# --- timing -----------------------------------------------------------------------------------------


def time_calls(run: Callable[[], Any], warmup: int, min_iterations: int, min_time_s: float) -> list[int]:
    """Warm up, then time each call of ``run`` on its own until both minimums are met. Samples in ns."""
    for _ in range(warmup):
        run()
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    deadline = clock() + int(min_time_s * 1e9)
    while len(samples) < min_iterations or clock() < deadline:
        t0 = clock()
        run()
        append(clock() - t0)
    return samples


def wait_for_quiet(max_wait_s: float = 0.5, window_s: float = 0.02, busy_cores: float = 0.1) -> float:
    """Sleep until this process stops using the CPU (at most ``max_wait_s``); return the seconds waited.

    Interleaving runners is only fair if each starts on idle cores: after a session goes idle, ONNX Runtime's
    spinning pool threads keep a core busy for another ~50-100 ms (measured here), and so may other runtimes'
    pools. Process CPU time counts every thread, so a window with less than ``busy_cores`` of it is quiet.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait_s:
        cpu0, t0 = time.process_time(), time.perf_counter()
        time.sleep(window_s)
        if (time.process_time() - cpu0) / (time.perf_counter() - t0) < busy_cores:
            break
    return time.perf_counter() - start


def time_slice(run: Callable[[], Any], min_iterations: int, min_time_s: float, warmup: int = 3) -> list[int]:
    """One runner's turn in an interleaved round: wait for quiet cores, wake the runner, then time it."""
    wait_for_quiet()
    return time_calls(run, warmup, min_iterations, min_time_s)


# --- defaults fitted to the model --------------------------------------------------------------------

# Per-core multiply-accumulate rate assumed for fp32 on a CPU, to guess a model's time before measuring it.
# Measured here (AMD EPYC Zen 4, 2 cores shared with other jobs, load average ~8, onnxruntime 1.31.1):
# ResNet50 (3.86 GMACs per image) ran 8.3 GMAC/s at batch 1 and 7.9 at batch 8, ~4 per core. A quiet
# machine is faster; a guess on the slow side keeps the sweep short where it matters.
ASSUMED_MACS_PER_CORE_S = 4e9
MAX_INFERENCE_S = 4.0  # a batch size whose one inference is guessed longer is left out
SWEEP_BUDGET_S = 120.0  # guessed seconds of warm-up and timed runs over all batch sizes, at most


@dataclass(frozen=True)
class FittedDefaults:
    """What ``cnnkit bench`` chose for options not given, from the heaviest model's MACs."""

    macs_per_image: int
    cores: int
    guessed_ms_per_image: float
    batch_sizes: tuple[int, ...]
    warmup: int
    min_iterations: int
    min_time_s: float
    reason: str
    applied: tuple[str, ...] = ()  # the options that were not given and took these values

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"guessed_sweep_s": self.guessed_sweep_s()}

    def guessed_sweep_s(self) -> float:
        """The guessed length of warm-up and timed runs over all batch sizes (sessions left out)."""
        t1 = self.guessed_ms_per_image / 1e3
        return sum(self.warmup * b * t1 + max(self.min_iterations * b * t1, self.min_time_s) for b in self.batch_sizes)


def fit_defaults(macs_per_image: int, cores: int) -> FittedDefaults:
    """Batch sizes and runs per batch size that keep a sweep to a couple of minutes for a heavy model.

    One image is guessed to take ``macs / (cores x ASSUMED_MACS_PER_CORE_S)``. Batch sizes whose inference is
    guessed over ``MAX_INFERENCE_S`` are left out (batch 1 always stays). If the usual 10 warm-up and 50 timed
    runs per batch size would take more than ``SWEEP_BUDGET_S`` in all, warm-up drops to 3 runs and the timed
    runs to what fits the budget (never under 10). A light model keeps the usual defaults: batches 1..256,
    10 warm-up runs, >= 50 runs and >= 1 s per batch size.
    """
    cores = max(1, cores)
    t1 = macs_per_image / (cores * ASSUMED_MACS_PER_CORE_S) if macs_per_image > 0 else 0.0
    batches = tuple(b for b in DEFAULT_BATCH_SIZES if b == 1 or b * t1 <= MAX_INFERENCE_S)
    usual = FittedDefaults(int(macs_per_image), cores, 1e3 * t1, batches, DEFAULT_WARMUP, DEFAULT_MIN_ITERATIONS,
                           DEFAULT_MIN_TIME_S, "")
    heavy = usual.guessed_sweep_s() > SWEEP_BUDGET_S
    fitted = usual
    if heavy:
        per_run = sum(b * t1 for b in batches)  # one run at every batch size
        runs = int(min(DEFAULT_MIN_ITERATIONS, max(10, SWEEP_BUDGET_S / per_run - 3)))
        fitted = dataclasses.replace(usual, warmup=3, min_iterations=runs)
    if macs_per_image <= 0:
        reason = "MACs unknown: the usual defaults"
    elif not heavy and batches == DEFAULT_BATCH_SIZES:
        reason = f"{_macs_text(macs_per_image)} per image: light enough for the usual defaults"
    else:
        reason = (f"{_macs_text(macs_per_image)} per image, guessed {1e3 * t1:.3g} ms per image on {cores} core(s) "
                  f"at {ASSUMED_MACS_PER_CORE_S / 1e9:g} GMAC/s per core: batch sizes up to ~{MAX_INFERENCE_S:g} s per "
                  f"inference" + (f", runs cut to a guessed sweep of ~{fitted.guessed_sweep_s():.0f} s" if heavy else ""))
    return dataclasses.replace(fitted, reason=reason)


def _macs_text(macs: int) -> str:
    return f"{macs / 1e9:.3g} GMACs" if macs >= 1e8 else f"{macs / 1e6:.3g} MMACs"


_FITTED = ("batch_sizes", "warmup", "min_time_s", "min_iterations")  # the options resolve_defaults fits


def resolve_defaults(config: BenchConfig, ran: RunnerInfo | None = None) -> tuple[BenchConfig, FittedDefaults | None]:
    """``config`` with every option left as None fitted to its heaviest model (None: nothing was left open).

    ``ran``: what runs its ONNX Runtime models (None: the CPU). The fit assumes a CPU; where the session runs on
    another device (a GPU, say), the usual defaults apply."""
    open_fields = [f for f in _FITTED if getattr(config, f) is None]
    if not open_fields:
        return config, None
    from cnnkit.graph.summary import summarize_onnx

    macs, unknown = 0, 0
    for model in config.models:
        try:
            summary = summarize_onnx(model)
        except CnnkitError:
            continue  # describe_onnx reports a bad file before anything is measured
        if summary.total_macs >= macs:
            macs, unknown = summary.total_macs, summary.unknown_macs
    fitted = fit_defaults(macs, cpu_info()["usable_cores"] or 1)
    if macs and unknown:  # a lower bound: the fit may be too generous
        fitted = dataclasses.replace(fitted, reason=f"{fitted.reason}; {unknown} layer(s) of unknown shape not counted")
    if ran is not None and ran.device != "cpu":
        fitted = dataclasses.replace(fit_defaults(0, fitted.cores), macs_per_image=macs,
                                     reason=f"provider {config.session.provider}: the usual defaults (the fit assumes a CPU)")
    fitted = dataclasses.replace(fitted, applied=tuple(open_fields))
    return dataclasses.replace(config, **{f: getattr(fitted, f) for f in open_fields}), fitted


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


@dataclass
class _Prepared:
    """A runner built for one batch size, its timed call and the first call's time."""

    runner: Runner
    timed: TimedCall
    first_ms: float


def _prepare(model: Path, choice: RuntimeChoice, info: OnnxModelInfo, batch_size: int, session_config: SessionConfig,
             config: BenchConfig) -> _Prepared:
    """A fresh runner (its build timed by the runner), its first inference timed and checked, then warmed up.

    Every runtime is fed the same seeded input (:func:`make_input`: the model's own layout and dtype)."""
    runner = create_runner(choice, model, session_config, config.tflite, batch_size=batch_size)
    timed = runner.timed_call(make_input(info, batch_size, config.seed), config.include_copies)
    t0 = time.perf_counter_ns()
    timed.run()
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    check_outputs_finite(model, batch_size, timed.outputs())  # its buffers, copied to the host once
    for _ in range(config.warmup):
        timed.run()
    return _Prepared(runner, timed, first_ms)


def check_outputs_finite(model: Path, batch_size: int, outputs: dict[str, Any]) -> None:
    """Timing a model whose outputs hold NaN or Inf would measure a broken model: fail before any timing."""
    from cnnkit.finite import NonFiniteError, nonfinite

    bad = [(name, nf) for name, out in outputs.items() if (nf := nonfinite(out)) is not None]
    if bad:
        found = "; ".join(f"output {name}: {nf.describe()}" for name, nf in bad)
        raise NonFiniteError(f"{Path(model).name} at batch {batch_size}, first (warm-up) call on the seeded input: {found}",
                             hint="the model is broken for these inputs (pixel values 0..255); fix it before timing it")


# --- tuning -----------------------------------------------------------------------------------------


def tune_candidates(base: SessionConfig, on_gpu: bool) -> list[SessionConfig]:
    """ONNX Runtime session options worth trying on the provider that runs (``on_gpu``: CUDA's options, else
    the CPU's); the base configuration is always among them."""
    replace = dataclasses.replace
    out = [base]
    if on_gpu:
        out += [replace(base, cudnn_conv_algo_search=algo, cuda_graph=graph)
                for algo in CudnnConvAlgoSearch for graph in (False, True)]
        return list(dict.fromkeys(out))
    cores = cpu_info()["usable_cores"] or 1
    for threads in range(1, cores + 1):
        for spin in (True, False):
            for level in (GraphOptimization.ALL, GraphOptimization.EXTENDED):
                out.append(replace(base, intra_op_threads=threads, allow_spinning=spin, graph_optimization=level))
    if cores > 1:
        for spin in (True, False):
            out.append(replace(base, intra_op_threads=cores, inter_op_threads=cores, allow_spinning=spin,
                               execution_mode=ExecutionMode.PARALLEL))
    return list(dict.fromkeys(out))


def _tune_options(c: SessionConfig) -> dict[str, Any]:
    keys = ("intra_op_threads", "inter_op_threads", "allow_spinning", "graph_optimization", "execution_mode",
            "cudnn_conv_algo_search", "cuda_graph")
    d = c.to_dict()
    return {k: d[k] for k in keys}


def session_flags(options: dict[str, Any], on_gpu: bool) -> str:
    """The ``cnnkit bench`` flags that select these session options (a tune trial's ``options``)."""
    flags = [f"--threads {options['intra_op_threads']}"]
    if options.get("inter_op_threads"):
        flags.append(f"--inter-op-threads {options['inter_op_threads']}")
    if options.get("allow_spinning") is not None:
        flags.append("--spinning" if options["allow_spinning"] else "--no-spinning")
    flags += [f"--graph-optimization {options['graph_optimization']}", f"--execution-mode {options['execution_mode']}"]
    if on_gpu:
        flags.append(f"--cudnn-conv-algo-search {str(options['cudnn_conv_algo_search']).lower()}")
        if options.get("cuda_graph"):
            flags.append("--cuda-graph")
    return " ".join(flags)


TUNE_ROUNDS = 10  # short paired rounds: on a shared machine the speed drifts over seconds


def _tune_batch(model: Path, choice: RuntimeChoice, info: OnnxModelInfo, batch_size: int, plan: list[SessionConfig],
                config: BenchConfig, rng: Any, step: Callable[[str], None]) -> tuple[SessionConfig, list[TuneTrial]]:
    """Measure every candidate at one batch size and pick the options to use.

    All candidates are prepared first, then timed in ``TUNE_ROUNDS`` shuffled rounds on quiet cores; see
    :func:`cnnkit.stats.fastest_confirmed` for the choice. (Timed one after the other, candidates meet different
    states of a shared machine, and a short trial crowns one by luck: seen here, two identical configurations
    28 % apart.)
    """
    name = Path(model).name
    trials: list[TuneTrial] = []
    entries: list[tuple[SessionConfig, _Prepared]] = []
    failure: CnnkitError | None = None
    for candidate in plan:
        step(f"tuning {name} batch {batch_size}: sessions")
        try:
            entries.append((candidate, _prepare(model, choice, info, batch_size, candidate, config)))
        except CnnkitError as exc:
            # A candidate this provider cannot run (e.g. a CUDA graph with nodes left on the CPU) is a recorded
            # result of the search, not the end of it.
            failure = exc
            trials.append(TuneTrial(str(model), batch_size, _tune_options(candidate), None, 0, error=exc.one_line()))
    if not entries:
        assert failure is not None
        raise failure
    samples: list[list[int]] = [[] for _ in entries]
    round_medians = np.zeros((len(entries), TUNE_ROUNDS))
    order = list(range(len(entries)))
    for r in range(TUNE_ROUNDS):
        rng.shuffle(order)
        for i in order:
            step(f"tuning {name} batch {batch_size}")
            got = time_slice(entries[i][1].timed.run, 3, config.tune_time_s / TUNE_ROUNDS)
            samples[i] += got
            round_medians[i, r] = np.median(got)
    base_i = next((i for i, (c, _) in enumerate(entries) if c == plan[0]), None)
    chosen = fastest_confirmed(round_medians, base_i, config.seed)
    for i, ((candidate, _), got) in enumerate(zip(entries, samples, strict=True)):
        ratio = float(np.median(round_medians[i] / round_medians[base_i])) if base_i is not None else None
        trials.append(TuneTrial(str(model), batch_size, _tune_options(candidate), float(np.median(got)) / 1e6, len(got),
                                ratio_to_base=ratio, chosen=i == chosen))
    options = entries[chosen][0]
    entries.clear()  # release the sessions (and their thread pools) before the measurement proper
    return options, trials


def run_benchmark(config: BenchConfig, progress: ProgressCallback | None = None, rounds: int = 5) -> BenchResult:
    """Benchmark every model at every batch size (tuning the session options first with ``tune``).

    With several models, each batch size is measured in ``rounds`` alternating rounds (in shuffled order), so
    that drift of a shared machine hits every model alike; the minimum time and count are split over them.
    Options left as None are fitted to the models (:func:`resolve_defaults`); a fixed-batch model is measured
    at the batch sizes it takes and the others are recorded in ``skipped``.
    """
    import random

    entries = config.entries()
    described = {m: describe_onnx(m) for m in config.models}  # fail on a bad file before measuring anything
    infos = [described[m] for m, _ in entries]
    check_runtimes(config)
    given_batches = config.batch_sizes is not None
    ort = next(((m, c) for m, c in entries if c.runtime == "onnxruntime"), None)
    ran = None  # the device the session provider really runs on decides whether the CPU fit applies
    if ort is not None and any(getattr(config, f) is None for f in _FITTED):
        ran = create_runner(ort[1], ort[0], config.session).info
    config, fitted = resolve_defaults(config, ran)
    assert config.batch_sizes is not None and config.warmup is not None
    assert config.min_time_s is not None and config.min_iterations is not None
    batch_sizes = list(config.batch_sizes)
    if not given_batches:  # a fixed-batch model is measured at its own batch, whatever the fit chose
        batch_sizes = sorted(set(batch_sizes) | {i.input.batch for i in described.values() if i.input and i.input.batch})
        config = dataclasses.replace(config, batch_sizes=tuple(batch_sizes))
    ways_out = {m: _batch_way_out(m) for m, info in described.items() if info.input is not None and info.input.batch}
    skipped = [SkippedCase(str(m), b, _batch_refusal(m, info, b), ways_out[m])
               for b in batch_sizes for m, info in described.items()
               if info.input is not None and not info.input.accepts_batch(b)]
    refused = {(s.model, s.batch_size) for s in skipped}
    if all((str(m), b) in refused for m in config.models for b in batch_sizes):
        first = skipped[0]
        raise CnnkitError(f"nothing to measure: {first.reason}", hint=first.hint)
    plans: list[list[SessionConfig]] = []
    for model, choice in entries:
        if config.tune and choice.runtime == "onnxruntime":  # the session options tuned are ONNX Runtime's
            probe = create_runner(choice, model, config.session)  # the provider that really runs sets the search
            plans.append(tune_candidates(config.session, probe.info.on_gpu))
            del probe
        else:
            plans.append([])

    def runs_at(b: int) -> list[int]:
        """The entries measured at batch size ``b``."""
        return [i for i, (m, _) in enumerate(entries) if (str(m), b) not in refused]

    def rounds_at(b: int) -> int:
        return config.rounds if len(runs_at(b)) > 1 else 1

    total = sum(sum(len(plans[i]) * (1 + TUNE_ROUNDS) for i in runs_at(b)) + len(runs_at(b)) * (rounds_at(b) + 1)
                for b in batch_sizes) + extra_steps(config)
    done = 0

    def step(what: str) -> None:
        nonlocal done
        if progress:
            progress(what, done, total)
        done += 1

    measured: list[tuple[int, BenchCase]] = []  # (entry index, case)
    trials: list[TuneTrial] = []
    rng = random.Random(config.seed)
    for b in batch_sizes:
        here = runs_at(b)
        rounds_b = rounds_at(b)
        chosen: list[SessionConfig] = []
        for i in here:
            if not plans[i]:
                chosen.append(config.session)
                continue
            options, tried = _tune_batch(entries[i][0], entries[i][1], infos[i], b, plans[i], config, rng, step)
            trials += tried
            chosen.append(options)
        # One session per model, created and first-run timed, warmed up; then the alternating rounds.
        prepared = []
        for i, session_config in zip(here, chosen, strict=True):
            (model, choice), info = entries[i], infos[i]
            step(f"{_entry_name(model, choice)} batch {b}: session")
            prepared.append(_prepare(model, choice, info, b, session_config, config))
        samples: list[list[int]] = [[] for _ in prepared]
        round_p50: list[list[float]] = [[] for _ in prepared]
        order = list(range(len(prepared)))
        for _ in range(rounds_b):
            rng.shuffle(order)
            for k in order:
                step(f"{_entry_name(*entries[here[k]])} batch {b}")
                got = time_slice(prepared[k].timed.run, max(1, -(-config.min_iterations // rounds_b)),
                                 config.min_time_s / rounds_b)
                samples[k] += got
                round_p50[k].append(float(np.median(got)) / 1e6)
        for k, (i, prep, got) in enumerate(zip(here, prepared, samples, strict=True)):
            (model, choice), info, ran = entries[i], infos[i], prep.runner.info
            measured.append((i, BenchCase(
                model=str(model), model_sha256=info.sha256, precision=ran.precision, batch_size=b,
                provider=ran.provider_record(), stats=LatencyStats.from_samples(got, b), samples_ns=tuple(got),
                warmup=config.warmup, session_create_ms=prep.runner.build_ms, first_inference_ms=prep.first_ms,
                peak_rss_mb=_peak_rss_mb(), io_binding=prep.timed.io_binding, include_copies=config.include_copies,
                tuned=bool(plans[i]), runtime=ran.runtime, round_p50_ms=tuple(round_p50[k]),
            )))
        prepared.clear()  # release this batch size's sessions (and their thread pools) before the next
    measured.sort(key=lambda item: (item[0], item[1].batch_size))  # entry by entry, as given
    cases = [case for _, case in measured]
    extra = measure_extras(config, [described[m] for m in config.models], step)  # apart from the timed runs
    if progress:
        progress("done", total, total)
    return BenchResult(
        schema=SCHEMA,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config={
            "models": [str(m) for m in config.models], "batch_sizes": batch_sizes,
            "fitted_defaults": fitted.to_dict() if fitted is not None else None,
            "session": config.session.to_dict(), "warmup": config.warmup, "min_time_s": config.min_time_s,
            "min_iterations": config.min_iterations, "include_copies": config.include_copies, "tune": config.tune,
            "interleaved_rounds": config.rounds if len(entries) > 1 else 1, "runtimes": [r.label for r in config.runtimes],
            "tflite": str(config.tflite) if config.tflite else None,
            "tune_time_s": config.tune_time_s, "seed": config.seed, "clock": "time.perf_counter_ns",
            "profile": config.profile, "profile_runs": config.profile_runs, "memory": config.memory,
            "memory_runs": config.memory_runs, "cold_starts": config.cold_starts,
            "concurrency": list(config.concurrency),
            "preprocess": {str(m): input_record(i).to_dict() for m, i in described.items() if i.input is not None},
        },
        environment=environment() | {"gpu": gpu_info(), "runtimes": runtime_versions()},
        cases=tuple(cases),
        trials=tuple(trials),
        profiles=extra.profiles, memory=extra.memory, cold_start=extra.cold_start, concurrency=extra.concurrency,
        skipped=tuple(skipped),
    )


def _entry_name(model: Path, choice: RuntimeChoice) -> str:
    return f"{Path(model).name} [{choice.label}]"


def check_runtimes(config: BenchConfig) -> None:
    """Every runtime importable and every .tflite present before anything is measured (one-line errors)."""
    from cnnkit.runtimes.base import require_runtime
    from cnnkit.runtimes.registry import tflite_path

    for choice in config.runtimes:
        require_runtime(choice.runtime)
        if choice.runtime == "litert":
            for model in config.models:
                tflite_path(model, config.tflite)


def _batch_refusal(model: Path, info: OnnxModelInfo, batch_size: int) -> str:
    """Why ``model`` is not measured at ``batch_size``."""
    assert info.input is not None and info.input.batch is not None
    return (f"{Path(model).name} takes a fixed batch of {info.input.batch} (input {info.input.name} "
            f"{list(info.input.shape)}), not {batch_size}")


def _batch_way_out(model: Path) -> str:
    """How to measure a fixed-batch model at other batch sizes: ``--make-batch-dynamic`` where the graph scan
    finds it safe, else why not and a new export."""
    from cnnkit.export.batch import batch_rewrite_blocker
    from cnnkit.graph.info import MAKE_DYNAMIC_HINT, load_onnx

    blocker = batch_rewrite_blocker(load_onnx(model), Path(model).name)
    if blocker is None:
        return f"to measure other batch sizes, make the batch dynamic: {MAKE_DYNAMIC_HINT.format(model=model)}"
    return f"to measure other batch sizes, export the model again with a dynamic batch ({blocker})"


@dataclass(frozen=True)
class OverheadResult:
    """The harness against a bare ``session.run`` loop on the same session, interleaved."""

    batch_size: int
    harness_p50_ms: float
    bare_p50_ms: float
    rounds: int

    @property
    def overhead(self) -> float:
        """Relative: 0.02 means the harness's median is 2 % above the bare loop's."""
        return self.harness_p50_ms / self.bare_p50_ms - 1.0


def measure_overhead(model: Path, batch_size: int = 1, rounds: int = 10, round_time_s: float = 0.2,
                     session: SessionConfig | None = None) -> OverheadResult:
    """Alternate rounds of the harness's timing loop and of a bare loop, so drift hits both alike."""
    info = describe_onnx(model)
    from cnnkit.runtimes.onnxruntime import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(model, session or SessionConfig(intra_op_threads=1))
    sess = runner.session  # the bare loop is ONNX Runtime's own
    x = make_input(info, batch_size, 0)
    run = runner.timed_call(x).run
    feeds = {info.input_name: x}
    harness: list[int] = []
    bare: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(20):
        sess.run(None, feeds)
    for _ in range(rounds):
        harness += time_calls(run, warmup=0, min_iterations=1, min_time_s=round_time_s)
        deadline = clock() + int(round_time_s * 1e9)
        while clock() < deadline:  # what a user would write by hand
            t0 = clock()
            sess.run(None, feeds)
            bare.append(clock() - t0)
    return OverheadResult(batch_size, float(np.median(harness)) / 1e6, float(np.median(bare)) / 1e6, rounds)
