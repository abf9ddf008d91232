"""bench --scenario: MLPerf LoadGen's four scenarios on real runners, its logs parsed, its verdicts kept.

Short tests (a second per LoadGen test, a few hundred queries) on small onnx.helper models. Nothing here asserts on
timing except the planted slow SUT, which is slower than its bound by a factor of ten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlperf_loadgen", reason='needs MLPerf LoadGen: pip install "cnnkit[loadgen]"')

from cnnkit.bench.loadgen import (  # noqa: E402
    DETAIL_FILE,
    SUMMARY_FILE,
    LatencyBound,
    parse_scenarios,
    parse_summary,
    read_detail,
)
from cnnkit.bench.scenarios import RESULT_FILE, ScenarioConfig, prepare_workload, run_scenarios  # noqa: E402
from cnnkit.errors import CnnkitError  # noqa: E402
from cnnkit.results.load import load_result  # noqa: E402
from tests.cli.test_cli_foundation import assert_user_error, run  # noqa: E402
from tests.imaging import tiny_classifier, write_digit_folder  # noqa: E402

SHORT = {"min_duration_s": 1.0, "min_queries": 200, "samples": 64}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("lg") / "m.onnx")


def _agrees_with_detail(run_dir: Path) -> None:
    """The summary cnnkit parsed says what LoadGen's detail log says (the same test, two of its files)."""
    summary = parse_summary((run_dir / SUMMARY_FILE).read_text())
    detail = read_detail(run_dir / DETAIL_FILE)
    assert summary.valid == (detail["result_validity"] == "VALID")
    assert summary.satisfied["Min duration"] == detail["result_min_duration_met"]
    assert summary.satisfied["Min queries"] == detail["result_min_queries_met"]
    for p in ("50.00", "90.00", "99.00"):
        key = f"result_{p}_percentile_latency_ns"
        if key in detail:
            assert summary.stats[f"{p} percentile latency (ns)"] == detail[key]


def test_four_scenarios_on_onnxruntime_are_loadgens_figures(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "lg"
    config = ScenarioConfig(model, ("single-stream", "multi-stream", "server", "offline"), out, target_qps=100, **SHORT)
    result = run_scenarios(config)
    # Offline first (the server search starts from it); run again where its query ended before the min duration.
    scenarios = [r.scenario for r in result.runs]
    assert scenarios in (["offline", "single-stream", "multi-stream", "server"],
                         ["offline", "offline", "single-stream", "multi-stream", "server"])
    if scenarios.count("offline") == 2:
        assert result.runs[0].summary.satisfied["Min duration"] is False
        assert result.runs[1].point["expected_qps"] == pytest.approx(1.3 * result.runs[0].qps)
    assert result.samples["kind"] == "synthetic" and result.samples["samples"] == 64
    assert result.runner["runtime"] == "onnxruntime" and result.loadgen_version
    for r in result.runs:
        run_dir = out / r.log_dir
        assert (run_dir / SUMMARY_FILE).is_file() and (run_dir / DETAIL_FILE).is_file()
        _agrees_with_detail(run_dir)
        assert r.summary == parse_summary((run_dir / SUMMARY_FILE).read_text())
        assert r.valid == r.summary.valid and (r.valid or r.reasons)
        assert r.served["samples"] > 0
    by = {r.scenario: r for r in result.runs}
    assert by["single-stream"].percentile == 90.0 and by["single-stream"].latency_ms() > 0
    assert by["single-stream"].latency_ms() == by["single-stream"].summary.metrics["90.0th percentile latency (ns)"] / 1e6
    assert by["single-stream"].summary.parameters["min_query_count"] == "200"
    assert by["multi-stream"].summary.parameters["samples_per_query"] == "8"
    assert by["server"].target_qps == 100 and by["server"].summary.parameters["target_latency (ns)"] == "20000000"
    assert by["offline"].qps == by["offline"].summary.metrics["Samples per second"]
    # The one results loader reads it back, typed, equal to what was returned.
    loaded = load_result(out / RESULT_FILE)
    assert loaded == result
    # report renders the folder: LoadGen's figures in a section, the server run in the sweep plot.
    rep = run("report", out, "-o", tmp_path / "rep")
    assert rep.exit_code == 0, rep.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## LoadGen scenarios: m.onnx on onnxruntime" in md and "| server | perf | 100 |" in md
    assert (tmp_path / "rep" / "server_sweep.png").stat().st_size > 0


def test_planted_slow_sut_fails_the_latency_bound(model: Path, tmp_path: Path) -> None:
    """Every answer 200 ms late against a 20 ms bound: LoadGen judges the server run INVALID on latency."""
    config = ScenarioConfig(model, ("server",), tmp_path / "lg", target_qps=10, max_batch=1,
                            bound=LatencyBound.parse("p99=20ms"), min_duration_s=1.0, min_queries=10, samples=16)
    workload = prepare_workload(config)

    def slow(engine):
        def run_slowly(x: np.ndarray) -> np.ndarray:
            time.sleep(0.2)
            return engine(x)

        return run_slowly

    workload.engines = [slow(e) for e in workload.engines]
    result = run_scenarios(config, workload=workload)
    (server,) = result.runs
    assert not server.valid
    assert server.summary.satisfied["Performance constraints"] is False
    assert server.latency_ms(99) > 20


def test_server_search_reports_every_point(model: Path, tmp_path: Path) -> None:
    config = ScenarioConfig(model, ("server",), tmp_path / "lg", bound=LatencyBound.parse("p99=50ms"),
                            search_points=2, **SHORT)
    result = run_scenarios(config)
    (search,) = result.searches
    assert result.runs[0].scenario == "offline"  # the calibration the search starts from, kept
    assert len(search.runs) == 2 and all(result.runs[i].scenario == "server" for i in search.runs)
    assert search.bound == {"percentile": 99.0, "ms": 50.0}
    if search.best_run is not None:
        best = result.runs[search.best_run]
        assert best.valid and best.target_qps == search.best_qps
        assert search.best_qps == max(result.runs[i].target_qps for i in search.runs if result.runs[i].valid)
    else:
        assert not any(result.runs[i].valid for i in search.runs)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("digits")
    write_digit_folder(root / "digits", n=60, size=32, rgb=True)
    return tiny_classifier(root / "m.onnx"), root / "digits"


def test_accuracy_mode_matches_eval(digits: tuple[Path, Path], tmp_path: Path) -> None:
    model, folder = digits
    config = ScenarioConfig(model, ("offline",), tmp_path / "lg", data_dir=folder, accuracy=True, min_duration_s=1.0)
    result = run_scenarios(config)
    (r,) = result.runs
    assert r.mode == "accuracy" and r.accuracy["samples"] == 60
    assert r.accuracy["matches"] and r.accuracy["loadgen_correct"] == r.accuracy["eval_correct"]
    assert (tmp_path / "lg" / r.log_dir / "mlperf_log_accuracy.json").is_file()


def test_planted_wrong_answer_fails_accuracy_mode(digits: tuple[Path, Path], tmp_path: Path) -> None:
    """One sample answered with another class than the runner's: the accuracy check names the difference."""
    model, folder = digits
    config = ScenarioConfig(model, ("single-stream",), tmp_path / "lg", data_dir=folder, accuracy=True,
                            min_duration_s=1.0, max_batch=1)
    workload = prepare_workload(config)
    first = workload.samples[0]

    def wrong(engine):
        def answer(x: np.ndarray) -> np.ndarray:
            scores = np.array(engine(x))
            for i in range(len(x)):
                if np.array_equal(x[i], first):
                    scores[i] = np.roll(scores[i], 1)  # top-1 moves to the next class
            return scores

        return answer

    workload.engines = [wrong(e) for e in workload.engines]
    result = run_scenarios(config, workload=workload)
    (r,) = result.runs
    assert not r.accuracy["matches"] and r.accuracy["confusion_cells_moved"] >= 1
    assert result.accuracy_failed == [r]


def test_cli_runs_scenarios_and_keeps_logs_with_the_result(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "lg"
    args = ("bench", model, "--scenario", "single-stream", "--min-time", "1", "--min-iterations", "100",
            "--samples", "32", "--out-dir", out, "--json", tmp_path / "r.json")
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert "single-stream" in r.stdout and ("VALID" in r.stdout) and "p90" in r.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema"] == "cnnkit.scenario/1" and (out / RESULT_FILE).is_file()
    assert (out / "single-stream" / SUMMARY_FILE).is_file()
    assert all(len(line) <= 80 for line in r.stdout.splitlines() if "│" in line or "VALID" in line)
    again = run(*args[:-2], "--json", tmp_path / "r2.json")  # the folder exists: refused without --force
    assert_user_error(again, str(out))


def test_missing_loadgen_is_one_line_naming_the_extra(model: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)
    r = run("bench", model, "--scenario", "offline", "--out-dir", tmp_path / "lg")
    assert_user_error(r, 'cnnkit[loadgen]')
    assert not (tmp_path / "lg").exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (("--scenario", "streaming"), "unknown scenario 'streaming'"),
    (("--scenario", "server", "--latency-bound", "99=20"), "--latency-bound: cannot read '99=20'"),
    (("--scenario", "offline", "--target-qps", "10"), "--scenario server"),
    (("--target-qps", "10"), "no --scenario"),
    (("--scenario", "offline", "--concurrency", "2"), "--concurrency"),
])
def test_bad_scenario_options_are_one_line(model: Path, args: tuple[str, ...], fragment: str) -> None:
    assert_user_error(run("bench", model, *args), fragment)


def test_parsers() -> None:
    assert parse_scenarios("single-stream, Server,offline,server") == ("single-stream", "server", "offline")
    assert LatencyBound.parse("p99=20ms") == LatencyBound(99.0, 20.0)
    assert LatencyBound.parse("p90 = 500us") == LatencyBound(90.0, 0.5)
    with pytest.raises(CnnkitError):
        LatencyBound.parse("p100=20ms")


def test_summary_parser_reads_an_invalid_server_run() -> None:
    text = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : Server
Mode     : PerformanceOnly
Completed samples per second    : 187.62
Result is : INVALID
  Performance constraints satisfied : NO
  Min duration satisfied : Yes
  Min queries satisfied : Yes
  Early stopping satisfied: NO
Recommendations:
 * Reduce target QPS to improve latency.
Early Stopping Result:
 * Run unsuccessful.
 * Processed 190 queries.
 * Would need to run at least 967 more queries,
 with the run being successful if every additional
 query were under latency.

================================================
Additional Stats
================================================
Scheduled samples per second : 187.85
99.00 percentile latency (ns)   : 28455873

================================================
Test Parameters Used
================================================
target_qps : 200
target_latency (ns): 20000000

No warnings encountered during test.

No errors encountered during test.
"""
    s = parse_summary(text)
    assert s.scenario == "Server" and not s.valid and s.metrics == {"Completed samples per second": 187.62}
    assert s.satisfied == {"Performance constraints": False, "Min duration": True, "Min queries": True,
                           "Early stopping": False}
    assert s.early_stopping[-1] == ("Would need to run at least 967 more queries, with the run being successful "
                                    "if every additional query were under latency.")
    assert s.percentile_ns(99) == 28455873 and s.parameters["target_qps"] == "200"
    assert "Reduce target QPS to improve latency." in s.reasons()
    with pytest.raises(CnnkitError, match="not a LoadGen summary"):
        parse_summary("hello")
    # The search runs a point again only where early stopping alone failed, with the queries LoadGen names.
    from cnnkit.bench.scenarios import ScenarioRun, _early_stopping_shortfall

    def as_run(summary_text: str) -> ScenarioRun:
        summary = parse_summary(summary_text)
        return ScenarioRun("server", "performance", {}, summary, summary.valid, summary.reasons(), "x", {}, 1.0)

    assert _early_stopping_shortfall(as_run(text)) is None  # the latency bound failed too
    only_early = text.replace("Performance constraints satisfied : NO", "Performance constraints satisfied : Yes")
    assert _early_stopping_shortfall(as_run(only_early)) == 190 + 967


def test_ctrl_c_mid_run_leaves_nothing(model: Path, tmp_path: Path) -> None:
    """SIGINT while LoadGen runs a 60 s test: exit 130 at once, one line, no result folder or staging left."""
    out = tmp_path / "lg"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(Path(__file__).parents[2] / "toolkit"),
                                                                  os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", "bench", str(model), "--scenario", "server",
                             "--target-qps", "50", "--min-time", "60", "--out-dir", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    end = time.monotonic() + 120
    while not any((tmp_path / name / "server-qps-50").exists() for name in os.listdir(tmp_path)):
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()[1]
        time.sleep(0.1)
    time.sleep(1)  # LoadGen is issuing queries
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("cnnkit: interrupted") and "Traceback" not in err and "terminate" not in err, err
    assert os.listdir(tmp_path) == []


def test_openvino_serves_with_its_streams_one_infer_request_per_worker(model: Path, tmp_path: Path) -> None:
    """Another runtime of the contract as the SUT: OpenVINO compiles once for throughput and each worker has an
    infer request of its own (as many as OpenVINO asks for, or --workers); LoadGen's logs read."""
    pytest.importorskip("openvino", reason='needs OpenVINO: pip install "cnnkit[openvino]"')
    from cnnkit.runtimes.registry import RuntimeChoice, create_runner

    config = ScenarioConfig(model, ("single-stream", "offline"), tmp_path / "lg", runtime=RuntimeChoice("openvino", "fp32"),
                            workers=3, **SHORT)
    result = run_scenarios(config)
    assert result.runtime == "openvino" and result.runner["active"] == "OpenVINO CPU"
    assert result.runner["options"]["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert result.serving["runners"] == 1 and result.serving["workers"] == result.serving["infer_requests"] == 3
    assert result.serving["streams"] >= 1 and "compiled for throughput" in result.serving["how"]
    for r in result.runs:
        _agrees_with_detail(tmp_path / "lg" / r.log_dir)
        assert r.served["samples"] > 0
    # Without --workers: the requests OpenVINO itself asks for, each answering as the latency-compiled model does.
    runner = create_runner(RuntimeChoice("openvino", "fp32"), model, throughput=True)
    engines = runner.request_engines()
    assert len(engines) == len(runner.requests) >= 1
    x = np.random.default_rng(0).uniform(0, 255, (4, *runner.input_shape[1:])).astype(np.float32)
    want = create_runner(RuntimeChoice("openvino", "fp32"), model).infer({runner.input_name: x})
    for infer in engines:
        got = infer({runner.input_name: x})
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_compare_gates_scenario_results(model: Path, tmp_path: Path) -> None:
    """compare on two scenario results, with compare's verdict words: a single-stream p90 (and its early-stopping
    estimate) 10x higher and offline samples/s 10x lower are regressions, exit 1; another runtime is flagged."""
    out = tmp_path / "lg"
    run_scenarios(ScenarioConfig(model, ("single-stream", "offline"), out, **SHORT))
    data = json.loads((out / RESULT_FILE).read_text())
    slow = json.loads(json.dumps(data))
    slow["runtime"] = "openvino"
    for r in slow["runs"]:
        s = r["summary"]
        if r["scenario"] == "single-stream":
            s["stats"] = {k: v * 10 if "latency" in k else v for k, v in s["stats"].items()}
            s["early_stopping_estimates_ns"] = {k: v * 10 for k, v in s["early_stopping_estimates_ns"].items()}
        else:
            s["metrics"]["Samples per second"] /= 10
    (tmp_path / "slow.json").write_text(json.dumps(slow))
    r = run("compare", out / RESULT_FILE, tmp_path / "slow.json", "--json", tmp_path / "c.json")
    assert r.exit_code == 1, r.output
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["kind"] == "scenario" and result["regressed"]
    by = {c["key"].split(" | ")[-1]: c for c in result["scenarios"]}
    assert by["single-stream"]["verdict"] == "regression" and by["single-stream"]["metric"] == "p90 ms"
    assert by["single-stream"]["ratio"] == pytest.approx(10)
    assert by["offline"]["verdict"] == "regression" and by["offline"]["ratio"] == pytest.approx(10)
    assert all("runtime onnxruntime -> openvino" in c["differs"] for c in result["scenarios"])
    assert "REGRESSION" in r.stdout
    assert all(len(line) <= 80 for line in r.stdout.splitlines() if not line.startswith("wrote "))
    back = run("compare", tmp_path / "slow.json", out / RESULT_FILE)
    assert back.exit_code == 0 and "improvement" in back.stdout
