"""When a latency measurement is too noisy to trust, and why.

Two signs, both from a case's own samples: a long tail (p99 over ``TAIL_RATIO`` times p50: other work
preempted the runs) and drift (the samples, in the order they were taken, split into ``PARTS`` parts
whose medians differ by more than ``DRIFT_RATIO``: the machine's speed changed during the run, or the
interleaved rounds disagree).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TAIL_RATIO = 20.0
DRIFT_RATIO = 1.3
PARTS = 5
MIN_PER_PART = 5
ADVICE = "re-run on a quiet machine (nothing else running) or with a longer --min-time before trusting it"


def noise_reasons(samples_ns: Sequence[int], p50_ms: float, p99_ms: float,
                  round_p50_ms: Sequence[float] = ()) -> list[str]:
    """Why these samples are too noisy to trust; empty when they look fine.

    ``round_p50_ms``: the median of each interleaved round, where the run had several.
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
