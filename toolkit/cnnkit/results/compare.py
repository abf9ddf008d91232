"""Compare two stored results (benchmarks or evaluations) and decide, accounting for noise, what regressed.

Latency: rows match by model file name x runtime and provider x batch size (and device, for fleet results, which
are compared device by device). Per row, the ratio of the new median to the baseline's, with a 95 % bootstrap
confidence interval over blocks of the stored raw samples (:func:`cnnkit.stats.ratio_interval`: each run's
interleaved rounds, or fifths of its samples). Verdicts (table, JSON and docs/commands/compare.md use these words
alike), with ``t`` the threshold, symmetric for both directions:

- ``regression``: the interval lies above ``1 + t`` (a slowdown beyond the threshold, confirmed);
- ``improvement``: the interval lies below ``1 - t`` (a speed-up beyond the threshold, confirmed);
- ``unchanged``: the interval lies within ``1 - t`` .. ``1 + t`` (any change is within the threshold, confirmed);
- ``inconclusive``: anything else: the interval reaches beyond the threshold band without confirming a change
  (e.g. -18 % with an interval of -64 % .. +43 %): measure again with more samples.

Only a regression fails the gate. Rows that match but were measured differently (precision, session options,
CPU, library versions) are flagged beside their verdict. No matching row at all is an error that lists what each
file holds: a gate that compared nothing must not pass. Accuracy: per model, the drop in percentage points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.finite import require_finite
from cnnkit.results.load import ResultError, load_result
from cnnkit.stats import block_medians_ms, ratio_interval

SCHEMA = "cnnkit.compare/1"
KNOWN = ("cnnkit.bench/1", "cnnkit.eval/1", "cnnkit.fleet-bench/1", "cnnkit.scenario/1")
VERDICTS = ("regression", "improvement", "unchanged", "inconclusive")
# Packages whose version can change inference speed or results.
_INFERENCE_PACKAGES = ("cnnkit", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "openvino", "ai-edge-litert")


@dataclass(frozen=True)
class CompareConfig:
    """Defaults: a latency regression is > 10 % slower (an improvement > 10 % faster), confirmed by the samples;
    accuracy may drop 0.1 points."""

    baseline: Path
    new: Path
    max_latency_regression: float = 0.10
    max_accuracy_drop: float = 0.1
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        require_finite("--max-latency-regression", self.max_latency_regression)
        require_finite("--max-accuracy-drop", self.max_accuracy_drop)
        if self.max_latency_regression < 0:
            raise CnnkitError(f"--max-latency-regression must be >= 0, got {self.max_latency_regression}",
                              hint="a share of the baseline's latency, e.g. --max-latency-regression 0.1 (10 %)")


@dataclass(frozen=True)
class LatencyChange:
    key: str  # model | provider | batch
    baseline_p50_ms: float
    new_p50_ms: float
    ratio: float
    ci_low: float
    ci_high: float
    verdict: str  # one of VERDICTS
    model: str = ""
    provider: str = ""
    batch_size: int = 0
    differs: tuple[str, ...] = ()  # how the two rows were measured differently (flagged beside the verdict)


@dataclass(frozen=True)
class AccuracyChange:
    model: str
    baseline: float
    new: float
    drop_pp: float
    verdict: str  # regression | ok
    differs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScenarioChange:
    """One LoadGen scenario figure of two ``bench --scenario`` results (matched by model file name and scenario;
    another runtime is flagged in ``differs``): ``metric`` (``p90 ms``, ``p99 ms``,
    ``QPS at p99 <= 20 ms``, ``samples/s``), the two values, and ``ratio`` as a slowdown (new/baseline for a
    latency, baseline/new for a rate: above 1 is worse) with its interval (see :func:`_compare_scenarios`)."""

    key: str  # model | scenario
    metric: str
    baseline: float
    new: float
    ratio: float
    ci_low: float
    ci_high: float
    verdict: str  # one of VERDICTS
    basis: str  # what the interval stands on
    differs: tuple[str, ...] = ()


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
    scenarios: tuple[ScenarioChange, ...] = ()

    @property
    def regressed(self) -> bool:
        return any(c.verdict == "regression" for c in (*self.latency, *self.accuracy, *self.scenarios))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"regressed": self.regressed}


def latency_verdict(low: float, high: float, threshold: float) -> str:
    """See the module docstring: only the interval decides, never the point estimate alone; a speed-up must
    clear the threshold as a slowdown must (two identical runs 1 % apart are unchanged, not improved)."""
    if low > 1 + threshold:
        return "regression"
    if high < 1 - threshold:
        return "improvement"
    if low >= 1 - threshold and high <= 1 + threshold:
        return "unchanged"
    return "inconclusive"


def _packages(env: dict[str, Any]) -> dict[str, Any]:
    pk = env.get("packages") or {}
    return {k: pk.get(k) for k in _INFERENCE_PACKAGES if k in pk}


def _env_differences(b_env: dict[str, Any], n_env: dict[str, Any]) -> list[str]:
    out = []
    b_cpu, n_cpu = (b_env.get("cpu") or {}).get("model"), (n_env.get("cpu") or {}).get("model")
    if b_cpu != n_cpu:
        out.append(f"CPU {b_cpu} -> {n_cpu}")
    b_pk, n_pk = _packages(b_env), _packages(n_env)
    changed = [f"{k} {b_pk.get(k)} -> {n_pk.get(k)}" for k in sorted(set(b_pk) | set(n_pk)) if b_pk.get(k) != n_pk.get(k)]
    if changed:
        out.append("versions " + ", ".join(changed))
    return out


def _dict_changes(what: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [f"{what} " + ", ".join(f"{k} {a.get(k)} -> {b.get(k)}" for k in keys)] if keys else []


def _holdings(path: Path, cases: list[Any], kind: str) -> str:
    """What one result file holds, for the "nothing matched" error."""
    def listed(values: Any) -> str:
        return ", ".join(str(v) for v in sorted(set(values), key=lambda v: (isinstance(v, str), v))) or "nothing"

    if kind == "latency":
        return (f"{path} holds models {listed(Path(c.model).name for c in cases)}; precisions {listed(c.precision for c in cases)}; "
                f"providers {listed(c.provider['active'] for c in cases)}; runtimes {listed(c.runtime for c in cases)}; batch sizes {listed(c.batch_size for c in cases)}")
    return (f"{path} holds models {listed(Path(m.model).name for m in cases)}; precisions {listed(m.precision for m in cases)}; "
            f"providers {listed(m.provider['active'] for m in cases)}")


def _nothing_matched(config: CompareConfig, base_rows: list[Any], new_rows: list[Any], kind: str) -> ResultError:
    return ResultError(
        f"nothing to compare: no {'model x provider x batch size' if kind == 'latency' else 'model'} is in both "
        f"results. {_holdings(config.baseline, base_rows, kind)}. {_holdings(config.new, new_rows, kind)}",
        hint="compare results of the same model file names (and providers and batch sizes); "
             "a gate that compared nothing does not pass")


@dataclass(frozen=True)
class _Benches:
    """The bench results of one file: one, or one per device of a fleet result (device "" for a plain one)."""

    schema: str
    runs: tuple[tuple[str, Any], ...]  # (device, BenchResult)
    missing: tuple[dict[str, str], ...] = ()

    @property
    def environment(self) -> dict[str, Any]:
        return self.runs[0][1].environment if len(self.runs) == 1 else {}


def _benches(result: Any, path: Path) -> Any:
    """A fleet result as its per-device bench results (compared device by device); any other result as it is."""
    if result.schema == "cnnkit.fleet-bench/1":
        return _Benches("cnnkit.bench/1", tuple((e.device, e.result) for e in result.entries), tuple(result.missing))
    if result.schema == "cnnkit.bench/1":
        return _Benches(result.schema, (("", result),))
    return result


def compare_results(config: CompareConfig) -> CompareResult:
    base = _benches(load_result(config.baseline, expect=KNOWN), config.baseline)
    new = _benches(load_result(config.new, expect=KNOWN), config.new)
    if base.schema != new.schema:
        raise CnnkitError(f"cannot compare a {base.schema} result ({config.baseline}) with a {new.schema} one ({config.new})",
                          hint=f"compare two results of one kind (two bench or two eval results); cnnkit report {config.baseline} "
                               f"{config.new} -o DIR shows them side by side")
    thresholds = {"max_latency_regression": config.max_latency_regression, "max_accuracy_drop_pp": config.max_accuracy_drop}
    env_flags = _env_differences(base.environment, new.environment)
    notes = []
    if any(f.startswith("CPU ") for f in env_flags):
        notes.append("the two results come from different CPUs: latency changes may be the machine, not the model")
    if base.schema == "cnnkit.bench/1":
        return _compare_bench(config, base, new, thresholds, env_flags, notes)
    if base.schema == "cnnkit.scenario/1":
        return _compare_scenarios(config, base, new, thresholds, env_flags, notes)
    return _compare_eval(config, base, new, thresholds, env_flags, notes)


def _compare_bench(config: CompareConfig, base: Any, new: Any, thresholds: dict[str, float], env_flags: list[str],
                   notes: list[str]) -> CompareResult:
    def key(device: str, c: Any) -> tuple[str, str, str, int]:
        runtime = getattr(c, "runtime", "onnxruntime")
        where = c.provider["active"] if runtime == "onnxruntime" else f"{runtime} {c.provider['active']}"
        return device, Path(c.model).name, where, int(c.batch_size)

    def options(result: Any, c: Any) -> dict[str, Any]:
        opts = dict(result.config.get("session") or {}) | {"io_binding": c.io_binding, "include_copies": c.include_copies}
        tuned = result.chosen_trial(c.model, c.batch_size)
        return opts | (tuned.options if tuned is not None else {}) | dict(c.provider.get("options") or {})

    def rows(benches: _Benches) -> dict[tuple[str, str, str, int], tuple[Any, Any]]:
        return {key(device, c): (r, c) for device, r in benches.runs for c in r.cases}

    def label(k: tuple[str, str, str, int]) -> str:
        return (f"{k[0]} | " if k[0] else "") + f"{k[1]} | {k[2]} | batch {k[3]}"

    notes += [f"{m.get('device')} is missing from {path}: {m.get('reason')}"
              for path, benches in ((config.baseline, base), (config.new, new)) for m in benches.missing]
    b_cases, n_cases = rows(base), rows(new)
    matched = sorted(set(b_cases) & set(n_cases))  # numeric batch sizes sort as numbers
    if not matched:
        raise _nothing_matched(config, [c for _, c in b_cases.values()], [c for _, c in n_cases.values()], "latency")
    changes = []
    for k in matched:
        (b_run, b), (n_run, n) = b_cases[k], n_cases[k]
        bs, ns = np.asarray(b.samples_ns, dtype=np.float64), np.asarray(n.samples_ns, dtype=np.float64)
        if bs.size == 0 or ns.size == 0:
            raise CnnkitError(f"{label(k)}: latency samples must be non-empty to compare")
        b_blocks, n_blocks = block_medians_ms(bs, b.round_p50_ms), block_medians_ms(ns, n.round_p50_ms)
        if min(b_blocks.min(), n_blocks.min()) <= 0:
            raise CnnkitError(f"{label(k)}: latency samples must be positive to compare")
        # Two runs share no rounds: unpaired. The change shown is the medians' ratio; the interval decides.
        ci = ratio_interval(b_blocks, n_blocks, paired=False, ratio=float(np.median(ns) / np.median(bs)),
                            confidence=config.confidence, resamples=config.resamples, seed=config.seed)
        differs = ([f"precision {b.precision} -> {n.precision}"] if b.precision != n.precision else [])
        differs += _dict_changes("session options", options(b_run, b), options(n_run, n))
        differs += env_flags if not k[0] else _env_differences(b_run.environment, n_run.environment)
        changes.append(LatencyChange(
            label(k), float(np.median(bs)) / 1e6, float(np.median(ns)) / 1e6, ci.ratio, ci.low, ci.high,
            latency_verdict(ci.low, ci.high, config.max_latency_regression), k[1], k[2], k[3], tuple(differs)))
    unmatched = tuple(f"{label(k)} (only in {config.baseline if k in b_cases else config.new})"
                      for k in sorted(set(b_cases) ^ set(n_cases)))
    if any(c.differs for c in changes):
        notes.append("rows flagged 'differs' were measured differently: their change may not be the model's")
    if any(c.verdict == "inconclusive" for c in changes):
        notes.append("inconclusive: the interval reaches beyond the threshold without confirming a change; "
                     "measure again with more samples (--min-time) on a quieter machine")
    return CompareResult(SCHEMA, str(config.baseline), str(config.new), "latency", thresholds, latency=tuple(changes),
                         unmatched=unmatched, notes=tuple(notes))


def _compare_eval(config: CompareConfig, base: Any, new: Any, thresholds: dict[str, float], env_flags: list[str],
                  notes: list[str]) -> CompareResult:
    b_models = {Path(m.model).name: m for m in base.models}
    n_models = {Path(m.model).name: m for m in new.models}
    matched = sorted(set(b_models) & set(n_models))
    if not matched:
        raise _nothing_matched(config, list(base.models), list(new.models), "accuracy")
    data_flags = []
    if base.dataset.get("name") != new.dataset.get("name"):
        data_flags.append(f"dataset {base.dataset.get('name')} -> {new.dataset.get('name')}")
    if base.dataset.get("evaluated_samples") != new.dataset.get("evaluated_samples"):
        notes.append("the evaluations used different numbers of test images")
        data_flags.append(f"test images {base.dataset.get('evaluated_samples')} -> {new.dataset.get('evaluated_samples')}")
    acc = []
    for name in matched:
        b, n = b_models[name], n_models[name]
        drop = 100 * (b.accuracy - n.accuracy)
        differs = ([f"precision {b.precision} -> {n.precision}"] if b.precision != n.precision else []) + data_flags + env_flags
        acc.append(AccuracyChange(name, b.accuracy, n.accuracy, drop,
                                  "regression" if drop > config.max_accuracy_drop else "ok", tuple(differs)))
    unmatched = tuple(f"{k} (only in {config.baseline if k in b_models else config.new})"
                      for k in sorted(set(b_models) ^ set(n_models)))
    return CompareResult(SCHEMA, str(config.baseline), str(config.new), "accuracy", thresholds, accuracy=tuple(acc),
                         unmatched=unmatched, notes=tuple(notes))


def _server_bracket(result: Any) -> tuple[float, float, str] | None:
    """The server capacity a scenario result brackets at its bound: (highest VALID QPS or 0, lowest INVALID QPS
    above it or inf, the bound's label); None without server runs."""
    runs = [r for r in result.runs if r.scenario == "server" and r.mode == "performance" and r.target_qps]
    if not runs:
        return None
    bound = runs[-1].point.get("bound") or {}
    lo = max((r.target_qps for r in runs if r.valid), default=0.0)
    hi = min((r.target_qps for r in runs if not r.valid and r.target_qps > lo), default=math.inf)
    return lo, hi, f"QPS at p{bound.get('percentile', 99):g} <= {bound.get('ms', '?'):g} ms"


def _compare_scenarios(config: CompareConfig, base: Any, new: Any, thresholds: dict[str, float],
                       env_flags: list[str], notes: list[str]) -> CompareResult:
    """LoadGen's figures of two ``bench --scenario`` results, scenario by scenario, with compare's verdict words.

    LoadGen keeps no raw samples, so each interval stands on what it does report: single- and multi-stream, from
    each run's percentile to its early-stopping estimate (the bound LoadGen vouches for); server, the QPS bracket
    of each result (highest VALID .. lowest INVALID point tried: a search's resolution); offline, one query, the
    point figure alone (its verdict has no interval behind it, said in a note).
    """
    key = Path(base.model).name
    if key != Path(new.model).name:
        raise ResultError(f"nothing to compare: {config.baseline} holds {key}, {config.new} holds "
                          f"{Path(new.model).name}", hint="compare scenario results of the same model file name")
    t = config.max_latency_regression
    differs = list(env_flags)
    if base.runtime != new.runtime:  # a fair question (which runtime serves more?), but not one model's change
        differs.append(f"runtime {base.runtime} -> {new.runtime}")
    if base.samples.get("kind") != new.samples.get("kind"):
        differs.append(f"samples {base.samples.get('kind')} -> {new.samples.get('kind')}")

    def last(result: Any, scenario: str) -> Any:
        runs = [r for r in result.runs if r.scenario == scenario and r.mode == "performance"]
        return runs[-1] if runs else None

    def settings(run: Any) -> dict[str, Any]:
        return {k: run.point.get(k) for k in ("min_duration_ms", "min_query_count")}

    changes: list[ScenarioChange] = []
    unmatched: list[str] = []
    for scenario in ("single-stream", "multi-stream", "server", "offline"):
        b, n = last(base, scenario), last(new, scenario)
        if (b is None) != (n is None):
            unmatched.append(f"{key} | {scenario} (only in {config.baseline if b is not None else config.new})")
        if b is None or n is None:
            continue
        row_differs = differs + _dict_changes("LoadGen settings", settings(b), settings(n))
        if scenario in ("single-stream", "multi-stream"):
            bp, np_ = b.latency_ms(), n.latency_ms()
            if not bp or not np_:
                continue
            b_es, n_es = b.early_stopping_ms() or bp, n.early_stopping_ms() or np_
            ratio = np_ / bp
            low, high = min(ratio, np_ / b_es), max(ratio, n_es / bp)
            changes.append(ScenarioChange(f"{key} | {scenario}", f"p{b.percentile:g} ms", bp, np_, ratio, low, high,
                                          latency_verdict(low, high, t), "percentile .. early-stopping estimate",
                                          tuple(row_differs)))
        elif scenario == "server":
            bb, nb = _server_bracket(base), _server_bracket(new)
            if bb is None or nb is None:
                continue
            if bb[2] != nb[2]:
                row_differs.append(f"bound {bb[2]} -> {nb[2]}")
            if bb[0] == 0 or nb[0] == 0:
                notes.append(f"{key} | server: no VALID QPS in {config.baseline if bb[0] == 0 else config.new}: "
                             "nothing to compare at the bound")
                continue
            ratio = bb[0] / nb[0]
            low = bb[0] / nb[1] if nb[1] != math.inf else 0.0
            high = bb[1] / nb[0]
            changes.append(ScenarioChange(f"{key} | server", bb[2], bb[0], nb[0], ratio, min(low, ratio),
                                          max(high, ratio), latency_verdict(min(low, ratio), max(high, ratio), t),
                                          "highest VALID .. lowest INVALID QPS tried", tuple(row_differs)))
        else:
            if not b.qps or not n.qps:
                continue
            ratio = b.qps / n.qps
            changes.append(ScenarioChange(f"{key} | offline", "samples/s", b.qps, n.qps, ratio, ratio, ratio,
                                          latency_verdict(ratio, ratio, t), "one query: the point figure",
                                          tuple(row_differs)))
            notes.append("offline: LoadGen's one query gives one figure, so its verdict rests on the point figure, "
                         "with no interval behind it")
    if not changes:
        raise ResultError(f"nothing to compare: no LoadGen scenario with figures is in both {config.baseline} and "
                          f"{config.new}", hint="run the same --scenario for both; a gate that compared nothing does not pass")
    if any(c.verdict == "inconclusive" for c in changes):
        notes.append("inconclusive: the interval reaches beyond the threshold without confirming a change; run "
                     "longer (--min-time, --min-iterations) for a tighter early-stopping estimate, or search finer")
    return CompareResult(SCHEMA, str(config.baseline), str(config.new), "scenario", thresholds,
                         unmatched=tuple(unmatched), notes=tuple(notes), scenarios=tuple(changes))
