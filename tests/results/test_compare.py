"""The regression gate on stored samples with known answers."""

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from cnnkit.errors import CnnkitError
from cnnkit.results.compare import CompareConfig, compare_results, latency_verdict
from cnnkit.stats import block_medians_ms, ratio_interval

from tests.cli.test_cli_foundation import assert_user_error, run


def bench_case(samples_ms, batch: int, model: str = "/x/model.onnx", precision: str = "fp32",
               provider: str = "CPUExecutionProvider") -> dict:
    s = np.asarray(samples_ms, dtype=np.float64)
    p = np.percentile(s, [50, 90, 95, 99])
    return {"model": model, "model_sha256": "0" * 64, "precision": precision, "batch_size": batch,
            "provider": {"requested": "cpu", "providers": [provider], "fallback": False, "fallback_reason": None,
                         "options": {}, "active": provider},
            "stats": {"count": len(s), "min_ms": s.min(), "mean_ms": s.mean(), "p50_ms": p[0], "p90_ms": p[1],
                      "p95_ms": p[2], "p99_ms": p[3], "max_ms": s.max(), "std_ms": s.std(), "images_per_s": batch / p[0] * 1e3},
            "samples_ns": (s * 1e6).astype(int).tolist(), "warmup": 10, "session_create_ms": 5.0,
            "first_inference_ms": 1.0, "peak_rss_mb": 100.0, "io_binding": False, "include_copies": False}


def environment(cpu: str = "cpu-a", ort: str = "1.31.1") -> dict:
    return {"platform": "Linux", "machine": "x86_64", "cpu": {"model": cpu},
            "packages": {"cnnkit": "0.1.0", "onnxruntime-gpu": ort, "numpy": "2.0", "tensorflow": "2.21"}}


def write_bench(path: Path, cases: list[dict], cpu: str = "cpu-a", ort: str = "1.31.1", threads: int = 0) -> Path:
    path.write_text(json.dumps({"schema": "cnnkit.bench/1", "created": "2026-01-01T00:00:00+00:00",
                                "config": {"session": {"provider": "cpu", "intra_op_threads": threads}},
                                "environment": environment(cpu, ort), "cases": cases, "trials": []}))
    return path


def _bench(path: Path, samples_ms: dict[int, np.ndarray], cpu: str = "cpu-a", **kw) -> Path:
    return write_bench(path, [bench_case(s, b, **kw) for b, s in samples_ms.items()], cpu)


def write_eval(path: Path, accuracy: float, model: str = "m.onnx", precision: str = "fp32", samples: int = 100) -> Path:
    path.write_text(json.dumps({
        "schema": "cnnkit.eval/1", "dataset": {"name": "mnist", "evaluated_samples": samples}, "class_names": ["a", "b"],
        "models": [{"model": model, "sha256": "0", "precision": precision, "size_bytes": 1000,
                    "provider": {"active": "CPUExecutionProvider"}, "samples": samples, "accuracy": accuracy,
                    "per_class_accuracy": [accuracy, None], "confusion": [[1, 0], [0, 1]], "agreement_with_first": 1.0}],
        "environment": environment()}))
    return path


def test_bootstrap_ratio() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(10, 0.5, 400)
    ci = ratio_interval(block_medians_ms(base), block_medians_ms(base * 1.3), paired=False, resamples=1000)
    assert ci.ratio == pytest.approx(1.3) and ci.low <= 1.3 <= ci.high and ci.low > 1.25


def test_compare_runs_in_bounded_memory(tmp_path: Path) -> None:
    """100,000 samples per side: the bootstrap resamples block medians, never the samples (~3 GB if it did)."""
    rng = np.random.default_rng(0)
    a = _bench(tmp_path / "a.json", {1: rng.lognormal(0, 0.3, 100_000)})
    b = _bench(tmp_path / "b.json", {1: rng.lognormal(0.01, 0.3, 100_000)})
    tracemalloc.start()
    result = compare_results(CompareConfig(a, b))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.latency[0].verdict == "unchanged"
    assert peak < 200e6  # the two results as loaded (lists of ints) and their arrays; not O(resamples x n)


def test_identical_runs_a_percent_apart_are_unchanged_not_improved(tmp_path: Path) -> None:
    """Issue 19: two back-to-back runs of the same model, the second 1.1 % faster throughout (a tight interval
    that excludes 1): within the threshold both ways, so unchanged. An improvement must clear 1 - t."""
    rng = np.random.default_rng(4)
    base = rng.normal(1.0, 0.003, 2000)
    a = _bench(tmp_path / "a.json", {1: base, 8: 5 * base})
    b = _bench(tmp_path / "b.json", {1: base * 0.989, 8: 5 * base * 0.85})
    rows = {c.batch_size: c for c in compare_results(CompareConfig(a, b)).latency}
    assert rows[1].ci_high < 1 and rows[1].ci_low > 0.98  # confirmed 1.1 % faster, but within 10 %
    assert rows[1].verdict == "unchanged"
    assert rows[8].ci_high < 0.9 and rows[8].verdict == "improvement"  # 15 % faster clears the threshold
    assert latency_verdict(0.988, 0.989, 0.10) == "unchanged"


def test_verdicts(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = {1: rng.normal(1.0, 0.02, 300), 8: rng.normal(5.0, 0.1, 300), 64: rng.normal(20, 0.4, 300),
            128: rng.normal(40, 0.8, 300)}
    new = {1: rng.normal(1.0, 0.02, 300),       # the same
           8: rng.normal(6.5, 0.1, 300),        # 30 % slower, clearly
           64: rng.normal(16, 0.3, 300),        # 20 % faster
           128: np.array([30.0, 35, 40, 46, 47, 48, 60, 70])}  # median 16 % slower, but 8 noisy samples
    result = compare_results(CompareConfig(_bench(tmp_path / "a.json", base), _bench(tmp_path / "b.json", new)))
    verdict = {c.batch_size: c.verdict for c in result.latency}
    assert verdict == {1: "unchanged", 8: "regression", 64: "improvement", 128: "inconclusive"}
    assert result.regressed
    loose = compare_results(CompareConfig(tmp_path / "a.json", tmp_path / "b.json", max_latency_regression=0.5))
    assert not loose.regressed


def test_an_interval_spanning_one_is_inconclusive_not_unchanged() -> None:
    # The case: -18.5 % with an interval of -63.7 % .. +42.6 %.
    assert latency_verdict(0.363, 1.426, 0.10) == "inconclusive"
    assert latency_verdict(0.97, 1.04, 0.10) == "unchanged"
    assert latency_verdict(0.85, 0.99, 0.10) == "inconclusive"  # may be 15 % faster or 1 %: neither shown
    assert latency_verdict(0.80, 0.89, 0.10) == "improvement"
    assert latency_verdict(0.85, 1.02, 0.10) == "inconclusive"  # may be 15 % faster: not shown to be unchanged
    assert latency_verdict(1.11, 1.3, 0.10) == "regression"


def test_batch_sizes_sort_as_numbers(tmp_path: Path) -> None:
    s = {b: np.full(20, 1.0) for b in (1, 128, 256, 32, 8, 64)}
    r = compare_results(CompareConfig(_bench(tmp_path / "a.json", s), _bench(tmp_path / "b.json", s)))
    assert [c.batch_size for c in r.latency] == [1, 8, 32, 64, 128, 256]


def test_nothing_matched_is_an_error_listing_what_each_file_holds(tmp_path: Path) -> None:
    a = _bench(tmp_path / "fp32.json", {1: np.ones(20), 64: np.ones(20)})
    b = _bench(tmp_path / "int8.json", {1: np.ones(20), 64: np.ones(20)}, model="/x/model.int8.onnx", precision="int8-static")
    result = run("compare", a, b)
    assert_user_error(result, "nothing to compare", f"{a} holds models model.onnx; precisions fp32; providers "
                      "CPUExecutionProvider; runtimes onnxruntime; batch sizes 1, 64", f"{b} holds models model.int8.onnx; precisions "
                      "int8-static", "compared nothing does not pass")
    e1, e2 = write_eval(tmp_path / "e1.json", 0.9), write_eval(tmp_path / "e2.json", 0.9, model="other.onnx")
    assert_user_error(run("compare", e1, e2), "nothing to compare", "models m.onnx", "models other.onnx")


def test_rows_measured_differently_are_flagged(tmp_path: Path) -> None:
    s = {1: np.full(30, 1.0)}
    a = write_bench(tmp_path / "a.json", [bench_case(s[1], 1)], threads=0)
    b = write_bench(tmp_path / "b.json", [bench_case(s[1], 1, model="/y/model.onnx", precision="int8-static")],
                    cpu="cpu-b", ort="1.20.0", threads=4)
    r = compare_results(CompareConfig(a, b))
    differs = " ; ".join(r.latency[0].differs)
    for fragment in ("precision fp32 -> int8-static", "session options intra_op_threads 0 -> 4", "CPU cpu-a -> cpu-b",
                     "versions onnxruntime-gpu 1.31.1 -> 1.20.0"):
        assert fragment in differs
    assert "tensorflow" not in differs  # does not shape inference
    result = run("compare", a, b, "--json", tmp_path / "c.json")
    assert result.exit_code == 0 and "differs" in result.stdout and "precision fp32 -> int8-static" in result.stdout
    same = compare_results(CompareConfig(a, a))
    assert same.latency[0].differs == () and same.latency[0].verdict == "unchanged"


def test_inconclusive_is_the_word_in_table_and_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = _bench(tmp_path / "a.json", {1: rng.lognormal(0, 0.6, 12)})
    b = _bench(tmp_path / "b.json", {1: rng.lognormal(-0.2, 0.6, 12)})
    result = run("compare", a, b, "--json", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["latency"][0]["verdict"] == "inconclusive" and "inconclusive" in result.stdout
    assert "unchanged" not in result.stdout


def test_different_cpus_are_noted(tmp_path: Path) -> None:
    s = {1: np.full(20, 1.0)}
    r = compare_results(CompareConfig(_bench(tmp_path / "a.json", s), _bench(tmp_path / "b.json", s, cpu="cpu-b")))
    assert any("different CPUs" in n for n in r.notes)


def test_accuracy(tmp_path: Path) -> None:
    r = compare_results(CompareConfig(write_eval(tmp_path / "a.json", 0.98), write_eval(tmp_path / "b.json", 0.975)))
    assert r.accuracy[0].drop_pp == pytest.approx(0.5) and r.regressed
    r = compare_results(CompareConfig(tmp_path / "a.json", tmp_path / "b.json", max_accuracy_drop=1.0))
    assert not r.regressed
    r = compare_results(CompareConfig(tmp_path / "a.json", write_eval(tmp_path / "c.json", 0.98, precision="int8", samples=50)))
    assert "precision fp32 -> int8" in r.accuracy[0].differs and "test images 100 -> 50" in r.accuracy[0].differs


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"schema": "cnnkit.bench/9"}, "schema 'cnnkit.bench/9'"),
        ({"benchmarks": []}, "not a cnnkit result"),
        ({"schema": "other/1"}, "not a cnnkit benchmark, eval, fleet benchmark or LoadGen scenario result"),
        ("not json", "is not JSON"),
        ('{"schema": "cnnkit.bench/1", "x": NaN}', "NaN is not JSON"),
    ],
)
def test_bad_results(tmp_path: Path, content, message) -> None:
    f = tmp_path / "x.json"
    f.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CnnkitError, match=message):
        compare_results(CompareConfig(f, f))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["cases"][0].pop("samples_ns"), "field cases[0].samples_ns is missing"),
        (lambda d: d["cases"][0]["stats"].pop("p50_ms"), "field cases[0].stats.p50_ms is missing"),
        (lambda d: d["cases"][0].__setitem__("batch_size", "big"), "field cases[0].batch_size is invalid"),
        (lambda d: d["cases"][0]["provider"].pop("active"), "field cases[0].provider.active is missing"),
        (lambda d: d.pop("environment"), "field environment is missing"),
    ],
)
def test_missing_or_mistyped_field_names_file_and_field(tmp_path: Path, edit, field) -> None:
    good = _bench(tmp_path / "good.json", {1: np.ones(10)})
    data = json.loads(good.read_text())
    edit(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    assert_user_error(run("compare", good, bad), f"{bad}: {field}")
    assert_user_error(run("report", bad, "-o", tmp_path / "r"), f"{bad}: {field}")
    assert not (tmp_path / "r").exists()


def test_kinds_must_match(tmp_path: Path) -> None:
    a = _bench(tmp_path / "a.json", {1: np.ones(5)})
    b = write_eval(tmp_path / "b.json", 0.9)
    with pytest.raises(CnnkitError, match="cannot compare"):
        compare_results(CompareConfig(a, b))


@pytest.mark.parametrize("value", ["nan", "inf", "nan%"])
def test_nonfinite_thresholds_are_refused(tmp_path: Path, value: str) -> None:
    a = _bench(tmp_path / "a.json", {1: np.ones(5)})
    assert_user_error(run("compare", a, a, "--max-latency-regression", value), "--max-latency-regression must be a finite number")
    e = write_eval(tmp_path / "e.json", 0.9)
    assert_user_error(run("compare", e, e, "--max-accuracy-drop", "nan"), "--max-accuracy-drop must be a finite number")
