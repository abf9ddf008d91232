"""Latency statistics over kept raw samples: percentiles and spread, whether one configuration is confirmed
faster than another, and when a measurement is too noisy to trust.

Every figure is derived from the samples a run kept (nanoseconds, in the order they were taken), as
pytest-benchmark derives its ``Stats`` from its raw rounds: :class:`LatencyStats` for one shape's samples,
:func:`ratio_interval` for "is B faster than A" (used by ``bench --tune``, ``bench --recommend``,
``quantize --auto`` and ``compare`` alike), :func:`noise_reasons` for the noise flag.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TAIL_RATIO = 20.0
DRIFT_RATIO = 1.3
PARTS = 5
MIN_PER_PART = 5
ADVICE = "re-run on a quiet machine (nothing else running) or with a longer --min-time before trusting it"
CONFIDENCE, RESAMPLES = 0.95, 2000


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of one shape's samples, in milliseconds; ``images_per_s`` is batch / median latency.

    Percentiles interpolate linearly (numpy's default); ``std_ms`` is the sample standard deviation (0 for one
    sample)."""

    count: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    images_per_s: float

    @classmethod
    def from_samples(cls, samples_ns: Sequence[int] | np.ndarray, batch_size: int) -> LatencyStats:
        a = np.asarray(samples_ns, dtype=np.float64) / 1e6
        if a.size == 0:
            raise ValueError("no samples")
        p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
        return cls(
            count=int(a.size), min_ms=float(a.min()), mean_ms=float(a.mean()), p50_ms=float(p50), p90_ms=float(p90),
            p95_ms=float(p95), p99_ms=float(p99), max_ms=float(a.max()),
            std_ms=float(a.std(ddof=1)) if a.size > 1 else 0.0, images_per_s=float(batch_size / (p50 / 1e3)),
        )


# --- confirmed faster --------------------------------------------------------------------------------


def block_medians_ms(samples_ns: Sequence[int] | np.ndarray, round_p50_ms: Sequence[float] = ()) -> np.ndarray:
    """The medians (ms) of the blocks a run's samples are resampled by: its interleaved rounds where it had
    several, else ``PARTS`` consecutive parts of its samples (one part per sample when there are fewer)."""
    if len(round_p50_ms) > 1:
        return np.asarray(round_p50_ms, dtype=np.float64)
    a = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if a.size == 0:
        raise ValueError("no samples")
    return np.array([np.median(part) for part in np.array_split(a, min(PARTS, a.size))])


@dataclass(frozen=True)
class RatioInterval:
    """Latency of B over latency of A (below 1: B is faster) with its bootstrap interval."""

    ratio: float
    low: float
    high: float
    confidence: float = CONFIDENCE

    @property
    def confirmed_faster(self) -> bool:
        """B is faster and the samples confirm it: the whole interval lies below 1."""
        return self.high < 1.0


def ratio_interval(base_ms: Sequence[float], new_ms: Sequence[float], paired: bool, ratio: float | None = None,
                   confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0) -> RatioInterval:
    """How much slower ``new`` is than ``base`` (their median latencies' ratio), with a percentile-bootstrap
    interval over blocks of samples: the one method by which cnnkit says "confirmed faster" or "regressed".

    ``base_ms``/``new_ms``: per-block medians (:func:`block_medians_ms`). ``paired``: both were measured in
    the same interleaved rounds (block i of each saw the same state of the machine): the statistic is the
    median over rounds of the per-round ratio and round indices are resampled jointly, so drift shared by
    both cancels. Unpaired (two separate runs): each side's blocks are resampled on their own and the
    statistic is the ratio of the medians of block medians. ``ratio``: the point estimate to report (default:
    the statistic on the blocks as measured); only the interval decides.

    Why blocks and not single samples: consecutive inferences share the machine's state (clock, other tenants,
    caches), so on a shared machine they are far from independent. Resampled one by one, 10,000 of them give
    an interval ~sqrt(10,000 / blocks) too narrow: two identical back-to-back runs were told apart at -1.1 %
    (interval -1.2 .. -1.1 %), and a candidate a round of luck ahead was "confirmed faster". The round (or a
    fifth of a run) is the unit that varies independently, so the interval is as wide as the spread between
    them; with 5 blocks it takes every block to agree before a change counts as confirmed (a sign test's
    1/32). The raw-sample bootstrap this replaced is gone.
    """
    b, n = np.asarray(base_ms, dtype=np.float64), np.asarray(new_ms, dtype=np.float64)
    if b.size == 0 or n.size == 0 or not (np.all(b > 0) and np.all(n > 0)):
        raise ValueError("latency blocks must be non-empty and positive to compare")
    rng = np.random.default_rng(seed)
    if paired:
        if b.size != n.size:
            raise ValueError(f"paired blocks differ in number: {b.size} vs {n.size}")
        per_round = n / b
        point = float(np.median(per_round))
        draws = np.median(per_round[rng.integers(0, b.size, size=(resamples, b.size))], axis=1)
    else:
        point = float(np.median(n) / np.median(b))
        draws = (np.median(n[rng.integers(0, n.size, size=(resamples, n.size))], axis=1)
                 / np.median(b[rng.integers(0, b.size, size=(resamples, b.size))], axis=1))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return RatioInterval(point if ratio is None else float(ratio), float(low), float(high), confidence)


def fastest_confirmed(round_medians: np.ndarray, base: int | None, seed: int = 0) -> int:
    """Index of the candidate to use, from each candidate's median latency per round (candidates x rounds).

    The candidate with the lowest median per-round ratio to the base (the options given) replaces the base only
    where :func:`ratio_interval` (paired over rounds) confirms it faster. Without a base (``None``: the given
    options could not run), the lowest overall median wins.
    """
    m = np.asarray(round_medians, dtype=np.float64)
    if base is None:
        return int(np.argmin(np.median(m, axis=1)))
    fastest = int(np.argmin(np.median(m / m[base], axis=1)))
    if fastest == base:
        return base
    return fastest if ratio_interval(m[base], m[fastest], paired=True, seed=seed).confirmed_faster else base


# --- noise ---------------------------------------------------------------------------------------------


def noise_reasons(samples_ns: Sequence[int], p50_ms: float, p99_ms: float,
                  round_p50_ms: Sequence[float] = ()) -> list[str]:
    """Why these samples are too noisy to trust; empty when they look fine.

    Two signs, both from a case's own samples: a long tail (p99 over ``TAIL_RATIO`` times p50: other work
    preempted the runs) and drift (the samples, in the order they were taken, split into ``PARTS`` parts
    whose medians differ by more than ``DRIFT_RATIO``: the machine's speed changed during the run, or the
    interleaved rounds disagree). ``round_p50_ms``: the median of each interleaved round, where the run had several.
    """
    reasons = []
    if p50_ms > 0 and p99_ms > TAIL_RATIO * p50_ms:
        reasons.append(f"p99 is {p99_ms / p50_ms:.0f}x p50")
    rounds = [r for r in round_p50_ms if r > 0]
    if len(rounds) > 1 and max(rounds) / min(rounds) > DRIFT_RATIO:
        reasons.append(f"the medians of its {len(rounds)} interleaved rounds differ {max(rounds) / min(rounds):.1f}x")
    a = np.asarray(samples_ns, dtype=np.float64)
    if a.size >= PARTS * MIN_PER_PART:
        medians = [float(np.median(part)) for part in np.array_split(a, PARTS)]
        low, high = min(medians), max(medians)
        if low > 0 and high / low > DRIFT_RATIO:
            reasons.append(f"the medians of the run's {PARTS} consecutive parts differ {high / low:.1f}x")
    return reasons


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson's score interval for a proportion ``successes / n`` (None, None for ``n`` 0): unlike the normal
    approximation it stays inside [0, 1] and is honest at 0 % and 100 %, where accuracies of small test sets sit."""
    if n <= 0:
        return None, None
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
