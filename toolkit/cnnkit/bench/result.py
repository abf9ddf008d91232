"""A benchmark's typed result (``cnnkit.bench/1``): ``BenchResult``, one ``BenchCase`` per model x runtime x batch
size, the tuning trials and the batch sizes skipped."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


from cnnkit.bench.concurrency import ConcurrencyPoint
from cnnkit.bench.memory import ColdStartResult, MemoryResult
from cnnkit.bench.profile import OperatorProfile
from cnnkit.stats import LatencyStats


SCHEMA = "cnnkit.bench/1"


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
