"""Statistics against hand-computed values, and the timing loop's stopping rule."""

import math
import re

import pytest
from cnnkit.bench.timing import time_calls
from cnnkit.errors import CnnkitError
from cnnkit.stats import LatencyStats


def test_stats_match_hand_computed_values() -> None:
    # 1..10 ms as nanoseconds
    s = LatencyStats.from_samples([i * 1_000_000 for i in range(1, 11)], batch_size=8)
    assert s.count == 10
    assert (s.min_ms, s.max_ms, s.mean_ms) == (1.0, 10.0, 5.5)
    assert s.p50_ms == pytest.approx(5.5)  # between 5 and 6
    assert s.p90_ms == pytest.approx(9.1)  # linear: 9 + 0.1 * (10 - 9)
    assert s.p95_ms == pytest.approx(9.55)
    assert s.p99_ms == pytest.approx(9.91)
    assert s.std_ms == pytest.approx(math.sqrt(sum((i - 5.5) ** 2 for i in range(1, 11)) / 9))  # sample sd
    assert s.images_per_s == pytest.approx(8 / 0.0055)


def test_single_sample() -> None:
    s = LatencyStats.from_samples([2_500_000], batch_size=1)
    assert s.p50_ms == s.p99_ms == s.min_ms == 2.5 and s.std_ms == 0.0 and s.images_per_s == pytest.approx(400)


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError):
        LatencyStats.from_samples([], 1)


def test_timing_loop_meets_both_minimums() -> None:
    calls = []
    samples = time_calls(lambda: calls.append(1), warmup=3, min_iterations=25, min_time_s=0.0)
    assert len(samples) == 25 and len(calls) == 28  # warm-up runs are not kept
    samples = time_calls(lambda: None, warmup=0, min_iterations=1, min_time_s=0.05)
    assert len(samples) > 1 and all(s >= 0 for s in samples)


def test_bench_config_validation() -> None:
    from pathlib import Path

    from cnnkit.bench.config import BenchConfig

    with pytest.raises(CnnkitError, match="batch-sizes"):
        BenchConfig(models=(Path("m.onnx"),), batch_sizes=(0,))
    with pytest.raises(CnnkitError, match="min-iterations"):
        BenchConfig(models=(Path("m.onnx"),), min_iterations=0)
    with pytest.raises(CnnkitError, match="no model"):
        BenchConfig(models=())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"nodes": "all"}, "--nodes needs --engine ray"),
        ({"engine": "warp"}, "unknown --engine 'warp'"),
        ({"engine": "ray", "recommend": "default"}, "--recommend runs on this machine only"),
        ({"recommend": {"max_accuracy_drop": 100.0}}, "--max-accuracy-drop must be between 0 and 100 points, got 100.0"),
        ({"recommend": {"max_accuracy_drop": float("nan")}}, "--max-accuracy-drop must be between 0 and 100"),
        ({"cold_start": True, "cold_start_runs": 0}, "--cold-start-runs must be positive, got 0"),
        ({"session": {"intra_op_threads": -1}}, "--threads must be >= 0, got -1"),
    ],
)
def test_bench_config_checks_every_option_itself(options: dict, message: str) -> None:
    """The CLI only parses: BenchConfig (and the configs it holds) refuse bad values with the flag's name."""
    from pathlib import Path

    from cnnkit.bench.config import BenchConfig, RecommendConfig
    from cnnkit.runtimes.sessions import SessionConfig

    def build() -> BenchConfig:
        kw = dict(options)
        if "recommend" in kw:
            kw["recommend"] = RecommendConfig() if kw["recommend"] == "default" else RecommendConfig(**kw["recommend"])
        if "session" in kw:
            kw["session"] = SessionConfig(**kw["session"])
        return BenchConfig(models=(Path("m.onnx"),), **kw)

    with pytest.raises(CnnkitError, match=re.escape(message)):
        build()


def test_recommend_and_ray_are_config_fields() -> None:
    from pathlib import Path

    from cnnkit.bench.config import BenchConfig, RecommendConfig
    from cnnkit.runtimes.registry import parse_runtimes

    # --recommend adds ONNX Runtime itself, so --profile beside --runtime openvino is fine with it.
    c = BenchConfig(models=(Path("m.onnx"),), runtimes=parse_runtimes("openvino"), profile=True, recommend=RecommendConfig())
    assert c.recommend is not None and c.recommend.rounds == 10 and c.cold_starts == 0
    assert BenchConfig(models=(Path("m.onnx"),), engine="ray", nodes="gpu=1").nodes == "gpu=1"


def test_output_shapes_fix_the_batch_and_skip_dynamic_outputs() -> None:
    from types import SimpleNamespace as Out

    from cnnkit.runtimes.onnxruntime import output_shapes

    outs = [Out(name="probabilities", shape=["batch", 10]), Out(name="maps", shape=["batch", "h", 4]), Out(name="s", shape=[])]
    assert output_shapes(outs, 7) == {"probabilities": (7, 10)}


def test_tuned_options_become_bench_flags() -> None:
    from cnnkit.bench.tune import session_flags
    from cnnkit.runtimes.sessions import SessionConfig

    cpu = SessionConfig(intra_op_threads=1, allow_spinning=False).to_dict()
    assert session_flags(cpu, on_gpu=False) == "--threads 1 --no-spinning --graph-optimization all --execution-mode sequential"
    gpu = SessionConfig(provider="cuda", cuda_graph=True).to_dict()
    assert session_flags(gpu, on_gpu=True).endswith("--cudnn-conv-algo-search exhaustive --cuda-graph")


def test_tuning_keeps_the_given_options_unless_the_rounds_confirm_a_faster_one() -> None:
    import numpy as np
    from cnnkit.stats import fastest_confirmed

    rng = np.random.default_rng(0)
    drift = rng.choice([60.0, 95.0], size=10)  # the machine's state per round, shared by every candidate
    base = drift * rng.normal(1.0, 0.02, 10)
    same = drift * rng.normal(0.995, 0.02, 10)  # a lower median by luck, not confirmed
    faster = drift * rng.normal(0.8, 0.02, 10)
    assert fastest_confirmed(np.array([base, same]), base=0) == 0
    assert fastest_confirmed(np.array([base, same, faster]), base=0) == 2
    assert fastest_confirmed(np.array([faster, base]), base=1) == 0
    assert fastest_confirmed(np.array([base, same]), base=None) == int(np.argmin([np.median(base), np.median(same)]))


def test_images_per_second_keeps_three_digits_for_slow_models() -> None:
    from cnnkit.report.sections import rate

    assert rate(1.1682) == "1.17" and rate(42.04) == "42" and rate(15904.2) == "15,904"
