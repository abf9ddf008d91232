"""cnnkit.stats on synthetic samples with known answers: percentiles, and the one "confirmed faster" method."""

import numpy as np
import pytest
from cnnkit.stats import LatencyStats, block_medians_ms, noise_reasons, ratio_interval


def test_percentiles_of_known_samples() -> None:
    # 0..100 ms in 1 ms steps: the k-th percentile is k ms exactly.
    s = LatencyStats.from_samples([i * 1_000_000 for i in range(101)], batch_size=4)
    assert (s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms) == (50.0, 90.0, 95.0, 99.0)
    assert (s.min_ms, s.max_ms, s.mean_ms, s.count) == (0.0, 100.0, 50.0, 101)
    assert s.std_ms == pytest.approx(np.std(np.arange(101), ddof=1))
    assert s.images_per_s == pytest.approx(4 / 0.050)


def test_blocks_are_the_rounds_or_fifths_of_the_run() -> None:
    ns = [1_000_000] * 10 + [2_000_000] * 10 + [3_000_000] * 5
    assert block_medians_ms(ns).tolist() == [1.0, 1.0, 2.0, 2.0, 3.0]  # five consecutive parts, in order
    assert block_medians_ms(ns, round_p50_ms=(1.5, 2.5)).tolist() == [1.5, 2.5]  # the interleaved rounds
    assert block_medians_ms(ns, round_p50_ms=(1.5,)).size == 5  # one round: fifths of it
    assert block_medians_ms([4_000_000, 2_000_000]).tolist() == [4.0, 2.0]  # fewer samples than parts
    with pytest.raises(ValueError):
        block_medians_ms([])


def test_clearly_faster_is_confirmed_both_paired_and_not() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(10.0, 0.1, 10)
    faster = base * rng.normal(0.7, 0.01, 10)
    for paired in (True, False):
        ci = ratio_interval(base, faster, paired=paired)
        assert ci.confirmed_faster and ci.low < 0.7 < ci.high < 0.75
    assert not ratio_interval(faster, base, paired=True).confirmed_faster  # the other way round: slower


def test_the_same_is_not_confirmed_faster() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(10.0, 0.1, 10)
    same = rng.permutation(base)  # the same latencies in another order: unpaired, no change at all
    ci = ratio_interval(base, same, paired=False)
    assert ci.ratio == 1.0 and not ci.confirmed_faster and 0.98 < ci.low < 1 < ci.high < 1.02
    wobble = base * np.array([0.99, 1.01] * 5)  # paired: a percent either way, round by round
    ci = ratio_interval(base, wobble, paired=True)
    assert ci.ratio == pytest.approx(1.0) and not ci.confirmed_faster and ci.low == pytest.approx(0.99)


def test_noisy_blocks_confirm_nothing_though_the_median_is_lower() -> None:
    """Five blocks each, the new one's median 15 % lower but its blocks 40 % apart: no confirmed change."""
    base = [10.0, 9.0, 11.0, 10.5, 9.5]
    noisy = [6.0, 8.5, 14.0, 7.0, 11.0]
    ci = ratio_interval(base, noisy, paired=False)
    assert ci.ratio == pytest.approx(8.5 / 10.0) and ci.low < 0.9 and ci.high > 1.0 and not ci.confirmed_faster


def test_paired_rounds_cancel_drift_the_unpaired_view_cannot() -> None:
    """Rounds alternate between a quiet and a busy machine; the new one is 5 % faster in every round."""
    drift = np.array([60.0, 95.0] * 5)
    base, new = drift, drift * 0.95
    assert ratio_interval(base, new, paired=True).confirmed_faster
    assert not ratio_interval(base, new, paired=False).confirmed_faster  # drift swamps 5 % without pairing


def test_one_lucky_round_is_not_enough() -> None:
    """With 5 paired rounds a lead is confirmed only when every round shows it (a sign test's 1/32)."""
    base = np.full(5, 10.0)
    assert ratio_interval(base, base * [0.9, 0.9, 0.9, 0.9, 0.9], paired=True).confirmed_faster
    assert not ratio_interval(base, base * [0.9, 0.9, 0.9, 0.9, 1.01], paired=True).confirmed_faster


def test_the_point_estimate_reported_is_the_callers_and_the_interval_decides() -> None:
    ci = ratio_interval([10.0] * 5, [9.0] * 5, paired=False, ratio=0.91)
    assert (ci.ratio, ci.low, ci.high) == (0.91, pytest.approx(0.9), pytest.approx(0.9)) and ci.confirmed_faster


def test_bad_blocks_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty and positive"):
        ratio_interval([], [1.0], paired=False)
    with pytest.raises(ValueError, match="non-empty and positive"):
        ratio_interval([0.0, 1.0], [1.0, 1.0], paired=True)
    with pytest.raises(ValueError, match="differ in number"):
        ratio_interval([1.0, 1.0], [1.0], paired=True)


def test_noise_flag_reasons() -> None:
    steady = [1_000_000] * 50
    assert noise_reasons(steady, 1.0, 1.0) == []
    assert noise_reasons(steady, 1.0, 1.0, round_p50_ms=(1.0, 1.5)) == ["the medians of its 2 interleaved rounds differ 1.5x"]
