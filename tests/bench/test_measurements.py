"""bench's measurements beside latency, on real ONNX Runtime sessions over small onnx.helper graphs:
operator profile, memory and cold start in fresh processes, throughput under concurrency, the noise flag."""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import CnnkitError


def image_model(path: Path, channels: int = 16, classes: int = 10) -> Path:
    """NHWC 28x28x1 -> Transpose -> Conv 3x3 (``channels``) -> Relu -> GlobalAveragePool -> MatMul -> Softmax."""
    from onnx import TensorProto as T
    from onnx import helper, save

    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", T.FLOAT, [channels, 1, 3, 3], rng.standard_normal(channels * 9).astype(np.float32))
    fc = helper.make_tensor("fc", T.FLOAT, [channels, classes], rng.standard_normal(channels * classes).astype(np.float32))
    shape = helper.make_tensor("shape", T.INT64, [2], [-1, channels])
    nodes = [
        helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["nchw", "w"], ["conv"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
        helper.make_node("Reshape", ["pool", "shape"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(nodes, "tiny-cnn", [helper.make_tensor_value_info("images", T.FLOAT, ["N", 28, 28, 1])],
                              [helper.make_tensor_value_info("probabilities", T.FLOAT, ["N", classes])], [w, fc, shape])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx", channels=64)


def _x(batch: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (batch, 28, 28, 1)).astype(np.float32)


# --- operator profile -------------------------------------------------------------------------------------


def test_profile_top_operator_matches_ort_profile_file(model: Path, tmp_path: Path) -> None:
    """parse_profile against a direct reading of the file ONNX Runtime wrote, warm-up runs left out."""
    from cnnkit.bench.profile import parse_profile
    from cnnkit.runtimes.sessions import SessionConfig, create_session

    session, _ = create_session(model, SessionConfig(intra_op_threads=1), profile_prefix=str(tmp_path / "p"))
    for _ in range(8):
        session.run(None, {"images": _x(16)})
    events = json.loads(Path(session.end_profiling()).read_text())
    # Independently: each node's median kernel time over the last 5 model_run windows.
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run")[-5:]
    times: dict[str, list[float]] = defaultdict(lambda: [0.0] * 5)
    for e in events:
        for r, (a, b) in enumerate(runs):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and a <= e["ts"] <= b:
                times[e["name"][: -len("_kernel_time")]][r] += e["dur"]
    direct = {node: float(np.median(t)) for node, t in times.items()}
    kernel_us, top, types = parse_profile(events, last_runs=5)
    assert top[0].node == max(direct, key=direct.get)
    assert top[0].op_type == "Conv"  # the 64-channel conv on 28x28 dominates this graph
    assert kernel_us == pytest.approx(sum(direct.values()))
    assert top[0].us == pytest.approx(direct[top[0].node])
    assert sum(t.share for t in types) == pytest.approx(1.0)
    assert {t.op_type for t in types} >= {"Conv", "MatMul", "Softmax"}
    assert [t.us for t in types] == sorted((t.us for t in types), reverse=True)


def test_profile_model_leaves_no_file(model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cnnkit.bench.profile import profile_model
    from cnnkit.runtimes.sessions import SessionConfig

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    prof = profile_model(model, SessionConfig(), _x(4), "images", runs=3, warmup=1)
    assert prof.batch_size == 4 and prof.runs == 3 and prof.kernel_us > 0 and prof.run_ms > 0
    assert prof.top_operators[0].share > 0 and prof.provider == "CPUExecutionProvider"
    assert list(tmp_path.iterdir()) == []  # the profile file and its folder are gone
    assert not list(Path.cwd().glob("*.json"))
    with pytest.raises(CnnkitError, match="no model run"):
        from cnnkit.bench.profile import parse_profile

        parse_profile([{"cat": "Node", "name": "x_kernel_time", "ts": 1, "dur": 2}])


# --- memory and cold start --------------------------------------------------------------------------------


def test_memory_in_a_fresh_process_and_the_arena_flag(model: Path) -> None:
    from cnnkit.bench.memory import measure_in_child
    from cnnkit.runtimes.sessions import SessionConfig, session_options

    assert session_options(SessionConfig(cpu_mem_arena=False)).enable_cpu_mem_arena is False
    assert session_options(SessionConfig()).enable_cpu_mem_arena is True
    kids = {arena: measure_in_child(model, SessionConfig(cpu_mem_arena=arena).to_dict(), (28, 28, 1), "float32",
                                    "images", (1, 64), 1, runs=3)
            for arena in (True, False)}
    for arena, m in kids.items():
        assert m.cpu_mem_arena is arena  # the flag reached the child's session
        assert 10 < m.rss_before_session_mb < m.rss_after_session_mb + 1
        assert set(m.peak_rss_mb) == {1, 64} and all(v >= m.rss_before_session_mb * 0.9 for v in m.peak_rss_mb.values())
        assert m.session_create_ms > 0 and m.first_inference_ms > 0 and m.import_ms > 0
        assert m.peak_method == "VmHWM reset per batch size" and m.gpu_mb is None


def test_memory_child_reports_a_bad_model_in_one_line(tmp_path: Path) -> None:
    from cnnkit.bench.memory import measure_in_child
    from cnnkit.runtimes.sessions import SessionConfig

    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(CnnkitError, match=r"in a fresh process: .*bad\.onnx is a text file, not an ONNX model"):
        measure_in_child(tmp_path / "bad.onnx", SessionConfig().to_dict(), (28, 28, 1), "float32", "images", (1,), 1)


# --- concurrency ------------------------------------------------------------------------------------------


def test_concurrency_levels_and_threads() -> None:
    from cnnkit.cli.options import parse_concurrency
    from cnnkit.bench.concurrency import saturation, threads_for

    assert parse_concurrency("1,2,2", 4) == (1, 2) and parse_concurrency("sweep", 3) == (1, 2, 3)
    for bad, msg in (("1,x", "'x' is not a number"), ("0", "must be positive")):
        with pytest.raises(CnnkitError, match=msg):
            parse_concurrency(bad, 2)
    assert threads_for(2, 0, 2) == (1, False) and threads_for(4, 0, 8) == (2, False) and threads_for(2, 2, 2) == (2, True)
    assert threads_for(1, 0, 8) == (0, False) and threads_for(3, 0, 2) == (1, True)
    pts = [{"streams": n, "images_per_s": v} for n, v in ((1, 100.0), (2, 190.0), (3, 195.0), (4, 150.0))]
    assert saturation(pts) == 2
    assert saturation(pts[:2]) is None and saturation(pts[:1]) is None


def test_concurrency_measures_plausible_throughput(model: Path) -> None:
    import time

    from cnnkit.bench.concurrency import measure_concurrency
    from cnnkit.runtimes.sessions import SessionConfig, create_session

    x = _x(8)
    points = {n: measure_concurrency(model, SessionConfig(), x, "images", n, cores=2, min_time_s=0.3, min_requests=10)
              for n in (1, 2)}
    for n, p in points.items():
        assert p.streams == n and p.intra_op_threads == (0 if n == 1 else 1) and not p.oversubscribed
        assert p.requests >= 10 and p.wall_s >= 0.3
        assert p.images_per_s == pytest.approx(p.requests * 8 / p.wall_s)
        assert 0 < p.p50_ms <= p.p90_ms <= p.p99_ms <= p.max_ms
    # Against a bare loop on one session: one request in flight cannot beat it by much, nor lag far behind.
    session, _ = create_session(model, SessionConfig())
    for _ in range(3):
        session.run(None, {"images": x})
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.3:
        session.run(None, {"images": x})
        n += 1
    bare = n * 8 / (time.perf_counter() - t0)
    assert 0.2 * bare < points[1].images_per_s < 5 * bare  # a shared, loaded machine: loose on purpose


# --- bench end to end, JSON round trip, noise flag --------------------------------------------------------


def test_bench_with_every_measurement_round_trips(model: Path, tmp_path: Path) -> None:
    from cnnkit.bench.benchmark import run_benchmark
    from cnnkit.bench.config import BenchConfig
    from cnnkit.bench.result import BenchResult
    from cnnkit.io import write_json_atomic
    from cnnkit.runtimes.sessions import SessionConfig

    steps = []
    result = run_benchmark(BenchConfig(models=(model,), batch_sizes=(1, 8), min_time_s=0.05, min_iterations=5, warmup=1,
                                       profile=True, profile_runs=3, memory=True, memory_runs=2, cold_start=True,
                                       cold_start_runs=2,
                                       concurrency=(1, 2), session=SessionConfig(cpu_mem_arena=False)),
                           lambda what, done, total: steps.append((done, total)))
    assert steps[-1][0] == steps[-1][1]  # the progress total counted every step
    assert [p.batch_size for p in result.profiles] == [1, 8]
    assert all(p.top_operators and p.by_type[0].share > 0 for p in result.profiles)
    assert [(m.cpu_mem_arena, m.processes) for m in result.memory] == [(False, 2), (True, 1)]
    assert result.cold_start[0].processes == 2 and len(result.cold_start[0].samples["session_create_ms"]) == 2
    assert {(p.batch_size, p.streams) for p in result.concurrency} == {(1, 1), (1, 2), (8, 1), (8, 2)}
    assert result.config["session"]["cpu_mem_arena"] is False and result.config["concurrency"] == [1, 2]
    write_json_atomic(tmp_path / "b.json", result.to_dict())
    again = BenchResult.load(tmp_path / "b.json")
    assert again.memory == result.memory and again.profiles == result.profiles
    assert again.cold_start == result.cold_start and again.concurrency == result.concurrency
    # A result written before these sections existed still loads.
    old = result.to_dict()
    for key in ("profiles", "memory", "cold_start", "concurrency"):
        old.pop(key)
    assert BenchResult.from_dict(old).memory == ()


def test_noise_flag() -> None:
    from cnnkit.stats import noise_reasons

    steady = [1_000_000] * 50
    assert noise_reasons(steady, 1.0, 1.0) == []
    assert noise_reasons(steady, 1.0, 25.0) == ["p99 is 25x p50"]
    drifting = [1_000_000] * 40 + [2_000_000] * 10
    assert noise_reasons(drifting, 1.0, 2.0) == ["the medians of the run's 5 consecutive parts differ 2.0x"]
    assert noise_reasons(drifting[:10], 1.0, 2.0) == []  # too few samples to tell


def test_report_sections_and_runtime_comparison(model: Path, tmp_path: Path) -> None:
    """A bench of ONNX Runtime and OpenVINO on one model, with every measurement, rendered into the report."""
    pytest.importorskip("openvino")
    from cnnkit.bench.benchmark import run_benchmark
    from cnnkit.bench.config import BenchConfig
    from cnnkit.io import write_json_atomic
    from cnnkit.report.build import write_report
    from cnnkit.runtimes.registry import parse_runtimes

    result = run_benchmark(BenchConfig(models=(model,), batch_sizes=(1, 4), min_time_s=0.0, min_iterations=5, warmup=1,
                                       runtimes=parse_runtimes("onnxruntime,openvino"), rounds=2, profile=True,
                                       profile_runs=2, memory=True, memory_runs=2, cold_start=True, cold_start_runs=1,
                                       concurrency=(1, 2)))
    write_json_atomic(tmp_path / "bench.json", result.to_dict())
    written = write_report([tmp_path / "bench.json"], tmp_path / "rep")
    assert {"latency.png", "throughput.png", "concurrency.png"} <= set(written["files"])
    md = (tmp_path / "rep" / "report.md").read_text()
    for section in ("## Benchmark settings (bench.json)", "- run date: ", "- runtimes: onnxruntime, openvino",
                    "## Latency and throughput", "## Runtime comparison", "## Operator profile", "## Memory",
                    "## Cold start", "## Throughput vs concurrency", "tiny.onnx batch 4: throughput"):
        assert section in md, section
    comparison = md.split("## Runtime comparison")[1].split("\n## ")[0]
    assert "| batch | onnxruntime CPU | openvino OpenVINO CPU |" in comparison  # the runtime as --runtime names it
    assert comparison.count(" * |") == 2  # the fastest marked at each batch size


def test_fitted_defaults_follow_the_device_that_runs(model: Path) -> None:
    """The fit assumes a CPU: it applies where the session really runs on the CPU (a CUDA request that fell back
    included); a session on a GPU keeps the usual defaults."""
    from dataclasses import replace

    from cnnkit.bench.benchmark import run_benchmark
    from cnnkit.bench.config import BenchConfig
    from cnnkit.bench.defaults import resolve_defaults
    from cnnkit.runtimes.onnxruntime import recorded_info
    from cnnkit.runtimes.sessions import SessionConfig

    config = BenchConfig(models=(model,), warmup=1, min_time_s=0.0, min_iterations=3)
    cuda = SessionConfig(provider="cuda", allow_fallback=True)
    _, on_cpu = resolve_defaults(config, recorded_info({"active": "CPUExecutionProvider"}))
    _, on_gpu = resolve_defaults(replace(config, session=cuda), recorded_info({"active": "CUDAExecutionProvider"}))
    assert "light enough" in on_cpu.reason and "the fit assumes a CPU" not in on_cpu.reason
    assert on_gpu.reason == "provider cuda: the usual defaults (the fit assumes a CPU)"
    result = run_benchmark(replace(config, session=cuda))
    reason = result.config["fitted_defaults"]["reason"]
    fell_back = result.cases[0].provider["fallback"]
    assert ("the fit assumes a CPU" in reason) == (not fell_back), (reason, result.cases[0].provider)
