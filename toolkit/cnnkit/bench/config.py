"""What ``cnnkit bench`` measures and how: ``BenchConfig`` (checked as it is built) and ``RecommendConfig``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


from cnnkit.choices import check_engine
from cnnkit.errors import CnnkitError
from cnnkit.runtimes.registry import DEFAULT_RUNTIME, RuntimeChoice
from cnnkit.runtimes.sessions import SessionConfig


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
    (:func:`cnnkit.bench.defaults.fit_defaults`; for a small model: batches 1..256, 10 warm-up runs, >= 50 runs
    and >= 1 s per shape); on this machine (``engine`` local). A value given explicitly is kept as given."""

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
