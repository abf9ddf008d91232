"""The regression gate on stored samples with known answers."""

import json
from pathlib import Path

import numpy as np
import pytest

from cnnkit.compare import CompareConfig, bootstrap_ratio_ci, compare_results
from cnnkit.errors import CnnkitError


def _bench(path: Path, samples_ms: dict[int, np.ndarray], cpu: str = "cpu-a") -> Path:
    cases = []
    for b, s in samples_ms.items():
        ns = (np.asarray(s) * 1e6).astype(int).tolist()
        cases.append({"model": "/x/model.onnx", "precision": "fp32", "batch_size": b,
                      "provider": {"active": "CPUExecutionProvider"}, "samples_ns": ns,
                      "stats": {"p50_ms": float(np.median(s))}})
    path.write_text(json.dumps({"schema": "cnnkit.bench/1", "cases": cases, "environment": {"cpu": {"model": cpu}}}))
    return path


def test_bootstrap_ratio() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(10, 0.5, 400)
    ratio, low, high = bootstrap_ratio_ci(base, base * 1.3, 0.95, 1000, 0)
    assert ratio == pytest.approx(1.3) and low <= 1.3 <= high and low > 1.25


def test_verdicts(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = {1: rng.normal(1.0, 0.02, 300), 8: rng.normal(5.0, 0.1, 300), 64: rng.normal(20, 0.4, 300),
            128: rng.normal(40, 0.8, 300)}
    new = {1: rng.normal(1.0, 0.02, 300),       # the same
           8: rng.normal(6.5, 0.1, 300),        # 30 % slower, clearly
           64: rng.normal(16, 0.3, 300),        # 20 % faster
           128: np.array([30.0, 35, 40, 46, 47, 48, 60, 70])}  # median 16 % slower, but 8 noisy samples
    result = compare_results(CompareConfig(_bench(tmp_path / "a.json", base), _bench(tmp_path / "b.json", new)))
    verdict = {c.key.split("batch ")[1]: c.verdict for c in result.latency}
    assert verdict == {"1": "unchanged", "8": "regression", "64": "improvement", "128": "inconclusive"}
    assert result.regressed
    loose = compare_results(CompareConfig(tmp_path / "a.json", tmp_path / "b.json", max_latency_regression=0.5))
    assert not loose.regressed


def test_different_cpus_are_noted(tmp_path: Path) -> None:
    s = {1: np.full(20, 1.0)}
    r = compare_results(CompareConfig(_bench(tmp_path / "a.json", s), _bench(tmp_path / "b.json", s, cpu="cpu-b")))
    assert any("different CPUs" in n for n in r.notes)


def test_accuracy(tmp_path: Path) -> None:
    def ev(path: Path, acc: float) -> Path:
        path.write_text(json.dumps({"schema": "cnnkit.eval/1", "dataset": {"evaluated_samples": 100},
                                    "models": [{"model": "m.onnx", "accuracy": acc}]}))
        return path

    r = compare_results(CompareConfig(ev(tmp_path / "a.json", 0.98), ev(tmp_path / "b.json", 0.975)))
    assert r.accuracy[0].drop_pp == pytest.approx(0.5) and r.regressed
    r = compare_results(CompareConfig(tmp_path / "a.json", tmp_path / "b.json", max_accuracy_drop=1.0))
    assert not r.regressed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"schema": "cnnkit.bench/9"}, "schema 'cnnkit.bench/9', which compare does not read"),
        ({"benchmarks": []}, "not a cnnkit result"),
        ("not json", "is not JSON"),
    ],
)
def test_bad_results(tmp_path: Path, content, message) -> None:
    f = tmp_path / "x.json"
    f.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CnnkitError, match=message):
        compare_results(CompareConfig(f, f))


def test_kinds_must_match(tmp_path: Path) -> None:
    a = _bench(tmp_path / "a.json", {1: np.ones(5)})
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"schema": "cnnkit.eval/1", "models": []}))
    with pytest.raises(CnnkitError, match="cannot compare"):
        compare_results(CompareConfig(a, b))
