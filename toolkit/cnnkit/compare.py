"""Compare two stored results (benchmarks or evaluations) and decide, accounting for noise, what regressed.

Latency: per model x provider x batch size, the ratio of the new median to the baseline's, with a 95 % bootstrap
confidence interval from the stored raw samples. A regression is a slowdown beyond the threshold that the interval
confirms (its lower end is above ``1 + threshold``); a slowdown the interval does not confirm is reported as
inconclusive, not failed. Accuracy: per model, the drop in percentage points against its threshold.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError

SCHEMA = "cnnkit.compare/1"
KNOWN = ("cnnkit.bench/1", "cnnkit.eval/1", "cnnkit.fleet-bench/1")


@dataclass(frozen=True)
class CompareConfig:
    """Defaults: a latency regression is > 10 % slower (confirmed by the samples); accuracy may drop 0.1 points."""

    baseline: Path
    new: Path
    max_latency_regression: float = 0.10
    max_accuracy_drop: float = 0.1
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class LatencyChange:
    key: str  # model | provider | batch
    baseline_p50_ms: float
    new_p50_ms: float
    ratio: float
    ci_low: float
    ci_high: float
    verdict: str  # regression | inconclusive | improvement | unchanged


@dataclass(frozen=True)
class AccuracyChange:
    model: str
    baseline: float
    new: float
    drop_pp: float
    verdict: str  # regression | ok


@dataclass(frozen=True)
class CompareResult:
    schema: str
    baseline: str
    new: str
    kind: str
    thresholds: dict[str, float]
    latency: tuple[LatencyChange, ...] = ()
    accuracy: tuple[AccuracyChange, ...] = ()
    unmatched: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def regressed(self) -> bool:
        return any(c.verdict == "regression" for c in self.latency) or any(a.verdict == "regression" for a in self.accuracy)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"regressed": self.regressed}


def load_result(path: Path) -> dict[str, Any]:
    """A cnnkit JSON result of a schema compare understands; anything else is a one-line error."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as exc:
        raise CnnkitError(f"cannot read {p}: {exc.strerror}") from None
    except ValueError:
        raise CnnkitError(f"{p} is not JSON", hint="pass a --json result of cnnkit bench or cnnkit eval") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, str) or not schema.startswith("cnnkit."):
        raise CnnkitError(f"{p} is not a cnnkit result (no cnnkit schema)", hint="pass a --json result of cnnkit bench or cnnkit eval")
    if schema not in KNOWN:
        raise CnnkitError(f"{p} has schema {schema!r}, which compare does not read", hint=f"known: {', '.join(KNOWN)}")
    return data


def bootstrap_ratio_ci(base: np.ndarray, new: np.ndarray, confidence: float, resamples: int,
                       seed: int) -> tuple[float, float, float]:
    """Ratio of medians new/base and its percentile-bootstrap confidence interval."""
    rng = np.random.default_rng(seed)
    b = rng.choice(base, size=(resamples, len(base)), replace=True)
    n = rng.choice(new, size=(resamples, len(new)), replace=True)
    ratios = np.median(n, axis=1) / np.median(b, axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return float(np.median(new) / np.median(base)), float(low), float(high)


def per_device(data: dict[str, Any]) -> dict[str, Any]:
    """A fleet result as one bench result whose cases carry their device (compared device by device); a node
    missing from a fleet run is noted. Any other result is returned as it is."""
    if data.get("schema") != "cnnkit.fleet-bench/1":
        return data
    cases = [c | {"device": e["device"]} for e in data["entries"] for c in e["result"]["cases"]]
    return {"schema": "cnnkit.bench/1", "cases": cases, "environment": {}, "missing": data.get("missing", [])}


def _case_key(case: dict[str, Any]) -> str:
    return (f"{case['device']} | " if case.get("device") else "") + f"{Path(case['model']).name} ({case['precision']}) | {case['provider']['active']} | batch {case['batch_size']}"


def compare_results(config: CompareConfig) -> CompareResult:
    base, new = per_device(load_result(config.baseline)), per_device(load_result(config.new))
    if base["schema"] != new["schema"]:
        raise CnnkitError(f"cannot compare a {base['schema']} result with a {new['schema']} one")
    thresholds = {"max_latency_regression": config.max_latency_regression, "max_accuracy_drop_pp": config.max_accuracy_drop}
    notes = []
    b_env, n_env = base.get("environment", {}), new.get("environment", {})
    notes += [f"{m['device']} is missing from {which}: {m['reason']}" for which, data in
              ((config.baseline, base), (config.new, new)) for m in data.get("missing", ())]
    if b_env.get("cpu", {}).get("model") != n_env.get("cpu", {}).get("model"):
        notes.append("the two results come from different CPUs: latency changes may be the machine, not the model")
    if base["schema"] == "cnnkit.bench/1":
        b_cases = {_case_key(c): c for c in base["cases"]}
        n_cases = {_case_key(c): c for c in new["cases"]}
        changes = []
        for key in sorted(set(b_cases) & set(n_cases)):
            bs = np.asarray(b_cases[key]["samples_ns"], dtype=np.float64)
            ns = np.asarray(n_cases[key]["samples_ns"], dtype=np.float64)
            ratio, low, high = bootstrap_ratio_ci(bs, ns, config.confidence, config.resamples, config.seed)
            limit = 1 + config.max_latency_regression
            if low > limit:
                verdict = "regression"
            elif ratio > limit:
                verdict = "inconclusive"
            elif high < 1:
                verdict = "improvement"
            else:
                verdict = "unchanged"
            changes.append(LatencyChange(key, float(np.median(bs)) / 1e6, float(np.median(ns)) / 1e6, ratio, low, high, verdict))
        unmatched = tuple(sorted(set(b_cases) ^ set(n_cases)))
        return CompareResult(SCHEMA, str(config.baseline), str(config.new), "latency", thresholds, latency=tuple(changes),
                             unmatched=unmatched, notes=tuple(notes))
    b_models = {Path(m["model"]).name: m for m in base["models"]}
    n_models = {Path(m["model"]).name: m for m in new["models"]}
    if base.get("dataset", {}).get("evaluated_samples") != new.get("dataset", {}).get("evaluated_samples"):
        notes.append("the evaluations used different numbers of test images")
    acc = []
    for name in sorted(set(b_models) & set(n_models)):
        b, n = b_models[name]["accuracy"], n_models[name]["accuracy"]
        drop = 100 * (b - n)
        acc.append(AccuracyChange(name, b, n, drop, "regression" if drop > config.max_accuracy_drop else "ok"))
    unmatched = tuple(sorted(set(b_models) ^ set(n_models)))
    return CompareResult(SCHEMA, str(config.baseline), str(config.new), "accuracy", thresholds, accuracy=tuple(acc),
                         unmatched=unmatched, notes=tuple(notes))
