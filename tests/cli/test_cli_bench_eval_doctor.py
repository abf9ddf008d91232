"""bench, eval and doctor through the CLI: tables, JSON, one-line errors."""

import json
import re
from pathlib import Path

import onnxruntime as ort
import pytest

from tests.cli.test_cli_foundation import assert_user_error, run




@pytest.mark.integration
def test_bench_table_and_json(exported_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run("bench", exported_model, "--batch-sizes", "1,4", "--min-time", "0", "--min-iterations", "5",
                 "--warmup", "1", "--json", out)
    assert result.exit_code == 0, result.output
    for text in ("p50 ms", "p99 ms", "images/s", "session created in", "peak RSS", "fp32"):
        assert text in result.stdout
    data = json.loads(out.read_text())
    assert data["schema"] == "cnnkit.bench/1" and len(data["cases"]) == 2
    assert len(data["cases"][0]["samples_ns"]) == data["cases"][0]["stats"]["count"]


@pytest.mark.integration
def test_bench_session_options_and_tune_flags(exported_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run("bench", exported_model, "--batch-sizes", "2", "--min-time", "0", "--min-iterations", "3", "--warmup", "1",
                 "--threads", "1", "--no-spinning", "--graph-optimization", "extended", "--execution-mode", "sequential",
                 "--json", out)
    assert result.exit_code == 0, result.output
    options = json.loads(out.read_text())["cases"][0]["provider"]["options"]
    assert (options["intra_op_threads"], options["allow_spinning"], options["graph_optimization"]) == (1, False, "extended")
    tuned = run("bench", exported_model, "--batch-sizes", "1", "--min-time", "0", "--min-iterations", "3", "--warmup", "1",
                "--tune")
    assert tuned.exit_code == 0, tuned.output
    assert "session options chosen by --tune" in tuned.stdout and "--graph-optimization" in tuned.stdout


@pytest.mark.integration
def test_eval_side_by_side(exported_model: Path, tmp_path: Path) -> None:
    result = run("eval", exported_model, exported_model, "--dataset", "digits", "--confusion", "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    assert "per-class accuracy" in result.stdout and "confusion matrix" in result.stdout and "+0.00 pp" in result.stdout
    assert json.loads((tmp_path / "e.json").read_text())["schema"] == "cnnkit.eval/1"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--batch-sizes", "0"), ("batch size must be positive, got 0",)),
        (("--batch-sizes", "-4"), ("batch size must be positive, got -4",)),
        (("--batch-sizes", "abc"), ("'abc' is not a number",)),
        (("--provider", "warp"), ("unknown or uninstalled execution provider 'warp'",)),
        (("--threads", "-1"), ("--threads must be >= 0",)),
        (("--inter-op-threads", "-2"), ("--inter-op-threads must be >= 0, got -2",)),
        (("--min-iterations", "0"), ("--min-iterations must be positive",)),
        (("--concurrency", "1,two"), ("--concurrency: 'two' is not a number",)),
        (("--concurrency", "0"), ("--concurrency: requests in flight must be positive, got 0",)),
        (("--profile", "--profile-runs", "0"), ("--profile-runs must be positive, got 0",)),
        (("--cold-start", "--cold-start-runs", "0"), ("--cold-start-runs must be positive, got 0",)),
        (("--profile", "--memory", "--runtime", "openvino"),
         ("--profile, --memory measure ONNX Runtime, which is not among the runtimes given", "--runtime onnxruntime,openvino")),
    ],
)
def test_bench_bad_options(exported_model: Path, args, fragments) -> None:
    assert_user_error(run("bench", exported_model, *args), *fragments)


def test_bench_bad_choice_is_a_usage_error(exported_model: Path) -> None:
    result = run("bench", exported_model, "--graph-optimization", "max")
    assert result.exit_code == 2 and "'max' is not one of" in result.output


def test_bench_bad_files(tmp_path: Path) -> None:
    assert_user_error(run("bench", tmp_path / "none.onnx"), "none.onnx not found")
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    assert_user_error(run("bench", tmp_path / "bad.onnx"), "bad.onnx is a text file, not an ONNX model")
    (tmp_path / "bad.onnx").write_bytes(bytes(range(256)))
    assert_user_error(run("bench", tmp_path / "bad.onnx"), "cannot read", "bad.onnx", "not a complete ONNX model")


def test_eval_bad_inputs(exported_model: Path, tmp_path: Path) -> None:
    assert_user_error(run("eval", tmp_path / "none.onnx", "--dataset", "digits"), "not found")
    assert_user_error(run("eval", exported_model, "--dataset", "cifar"), "unknown dataset 'cifar'")
    assert_user_error(run("eval", exported_model, "--dataset", "digits", "--batch-size", "0"), "--batch-size must be positive")
    assert_user_error(run("eval", exported_model, "--dataset", "mnist", "--data-dir", tmp_path / "nope"), "does not exist")


def test_bench_cuda_that_does_not_load(exported_model: Path) -> None:
    from tests.runtimes.test_sessions import CUDA_LOADS

    if CUDA_LOADS:
        pytest.skip("CUDA loads here")
    result = run("bench", exported_model, "--provider", "cuda", "--batch-sizes", "1", "--min-time", "0", "--min-iterations", "3")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert_user_error(result, "uninstalled")
        return
    assert_user_error(result, "CUDAExecutionProvider was requested but the session runs on CPUExecutionProvider")
    fb = run("bench", exported_model, "--provider", "cuda", "--batch-sizes", "1", "--min-time", "0", "--min-iterations", "3",
             "--allow-fallback")
    assert fb.exit_code == 0 and "FALLBACK" in fb.stdout and "(fallback)" in fb.stdout


def test_doctor(tmp_path: Path) -> None:
    result = run("doctor")
    assert result.exit_code == 0 and "CPUExecutionProvider: loads" in result.stdout and "CPU:" in result.stdout
    data = json.loads(run("doctor", "--json", "-", "--provider", "cpu").stdout)
    assert data["checked"] == {"provider": "CPUExecutionProvider", "usable": True}
    assert run("doctor", "--provider", "warp").exit_code == 1


def test_doctor_exit_1_for_an_unusable_provider() -> None:
    from tests.runtimes.test_sessions import CUDA_LOADS

    if CUDA_LOADS or "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs CUDA listed but not loadable")
    assert_user_error(run("doctor", "--provider", "cuda"), "CUDAExecutionProvider is not usable here")


def test_bench_profile_memory_cold_start_concurrency(tmp_path: Path) -> None:
    """Every measurement beside latency through the CLI, on a real session over a small graph; 80 columns."""
    from tests.bench.test_measurements import image_model

    model = image_model(tmp_path / "tiny.onnx")
    out = tmp_path / "bench.json"
    result = run("bench", model, "--batch-sizes", "1,8", "--min-time", "0.02", "--min-iterations", "5", "--warmup", "1",
                 "--profile", "--profile-runs", "2", "--memory", "--cold-start", "--cold-start-runs", "2",
                 "--concurrency", "1,2", "--no-arena", "--json", out)
    assert result.exit_code == 0, result.output
    for text in ("Operator profile", "by type: Conv", "Memory", "arena", "Cold start", "Throughput under load",
                 "in flight", "fp32 on CPU"):
        assert text in result.stdout, text
    rows = [line for line in result.stdout.splitlines()
            if line.startswith(("model ", "node ", "tiny.onnx  ", "batch  ")) or re.match(r"\s+[18]\s+\d", line)]
    assert len(rows) == 3 + 2 + 5 + 2 + 5  # headers and rows: latency, profile (2 headers), memory, cold start, load
    assert max(len(line) for line in rows) <= 80  # readable in an 80-column terminal
    data = json.loads(out.read_text())
    assert data["config"]["session"]["cpu_mem_arena"] is False
    assert [m["cpu_mem_arena"] for m in data["memory"]] == [False, True]
    assert [p["batch_size"] for p in data["profiles"]] == [1, 8] and all(p["by_type"] for p in data["profiles"])
    assert {(p["batch_size"], p["streams"]) for p in data["concurrency"]} == {(1, 1), (1, 2), (8, 1), (8, 2)}
    assert data["cold_start"][0]["processes"] == 2
    wide = run("bench", model, "--batch-sizes", "1", "--min-time", "0", "--min-iterations", "3", "--wide")
    assert wide.exit_code == 0 and "mean ± sd ms" in wide.stdout
