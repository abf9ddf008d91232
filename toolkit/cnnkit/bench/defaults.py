"""Options left open fitted to the model: batch sizes and runs per batch size guessed from its MACs, so that a
sweep of a heavy model stays a couple of minutes (``fit_defaults``, ``resolve_defaults``)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any


from cnnkit.bench.config import BenchConfig
from cnnkit.envinfo import cpu_info
from cnnkit.errors import CnnkitError
from cnnkit.runtimes.base import RunnerInfo


DEFAULT_BATCH_SIZES = (1, 8, 32, 64, 128, 256)
DEFAULT_WARMUP, DEFAULT_MIN_TIME_S, DEFAULT_MIN_ITERATIONS = 10, 1.0, 50


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


FITTED = ("batch_sizes", "warmup", "min_time_s", "min_iterations")  # the options resolve_defaults fits


def resolve_defaults(config: BenchConfig, ran: RunnerInfo | None = None) -> tuple[BenchConfig, FittedDefaults | None]:
    """``config`` with every option left as None fitted to its heaviest model (None: nothing was left open).

    ``ran``: what runs its ONNX Runtime models (None: the CPU). The fit assumes a CPU; where the session runs on
    another device (a GPU, say), the usual defaults apply."""
    open_fields = [f for f in FITTED if getattr(config, f) is None]
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
