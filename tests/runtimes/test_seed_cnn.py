"""Real OpenVINO and LiteRT runs on the seed CNN: .tflite export, interleaved multi-runtime bench, --recommend,
and a missing runtime as a one-line error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

pytest.importorskip("openvino")
pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def tflite_model(trained_model: Path, exported_model: Path) -> Path:
    """The seed CNN as a .tflite beside its .onnx (where bench and eval look for it)."""
    from cnnkit.export.tflite import TfliteExportConfig, export_tflite

    out = exported_model.with_suffix(".tflite")
    if not out.exists():
        result = export_tflite(TfliteExportConfig(trained_model, out))
        assert result.max_abs_diff < 1e-4 and result.input_shape[0] == "batch" and result.outputs_vary
    return out


def _cnnkit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_litert_runner_matches_onnxruntime(exported_model: Path, tflite_model: Path) -> None:
    from cnnkit.runtimes.onnxruntime import OnnxRuntimeRunner
    from cnnkit.runtimes.registry import RuntimeChoice, create_runner

    from cnnkit.graph.info import describe_onnx

    shape = describe_onnx(exported_model).image_shape
    x = np.random.default_rng(0).integers(0, 256, (7, *shape)).astype(np.float32)
    want = OnnxRuntimeRunner(exported_model).infer({"images": x})["probabilities"]
    runner = create_runner(RuntimeChoice("litert"), exported_model)
    assert runner.info.active == "LiteRT XNNPACK" and runner.input_name == "images"
    assert len(runner.info.options["tflite_sha256"]) == 64  # the bench row names the file it timed
    for batch in (7, 1, 3):  # the batch dimension is resized on demand
        got = runner.infer({"images": x[:batch]})["probabilities"]
        np.testing.assert_allclose(got, want[:batch], atol=1e-5)


def test_litert_and_keras_runners_keep_the_contract(trained_model: Path, exported_model: Path, tflite_model: Path) -> None:
    """Built from a choice, a batch in, a timed call that times real inferences, one RunnerInfo that survives
    JSON (the contract ONNX Runtime and OpenVINO keep in tests/runtimes/test_runner_contract.py)."""
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, RuntimeChoice, create_runner
    from cnnkit.runtimes.sessions import SessionConfig
    from tests.runtimes.test_runner_contract import check_contract

    x = np.random.default_rng(5).integers(0, 256, (3, *create_runner(DEFAULT_RUNTIME, exported_model).input_shape[1:]))
    x = x.astype(np.float32)
    want = create_runner(DEFAULT_RUNTIME, exported_model).infer({"images": x})["probabilities"]
    litert = create_runner(RuntimeChoice("litert"), exported_model, SessionConfig(intra_op_threads=1))
    np.testing.assert_allclose(check_contract(litert, x, "litert")["probabilities"], want, atol=1e-5)
    assert litert.info.threads == 1 and litert.info.model_path == str(tflite_model)
    assert litert.info.model_bytes == tflite_model.stat().st_size  # the file it ran, not the .onnx
    keras = create_runner(RuntimeChoice("keras"), trained_model, names=("images", ("probabilities",)))
    np.testing.assert_allclose(check_contract(keras, x, "keras")["probabilities"], want, atol=1e-5)
    assert keras.info.options["dtype_policy"] == "float32" and keras.info.model_path == str(trained_model)


def test_export_tflite_cli_refuses_overwrite(trained_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.tflite"
    r = _cnnkit("export", str(trained_model), "--format", "tflite", "-o", str(out))
    assert r.returncode == 0, r.stderr[-1500:]
    assert "max abs diff" in r.stdout and out.stat().st_size > 1000
    r = _cnnkit("export", str(trained_model), "--format", "tflite", "-o", str(out))
    assert r.returncode == 1 and "already exists" in r.stderr


def test_interleaved_bench_labels_every_row(exported_model: Path, tflite_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = _cnnkit("bench", str(exported_model), "--runtime", "onnxruntime,openvino,openvino:bf16,litert", "--batch-sizes", "1,4",
                "--min-time", "0", "--min-iterations", "10", "--warmup", "2", "--json", str(out))
    assert r.returncode == 0, r.stderr[-1500:]
    data = json.loads(out.read_text())
    assert data["config"]["runtimes"] == ["onnxruntime", "openvino", "openvino:bf16", "litert"]
    assert data["config"]["interleaved_rounds"] == 5 and data["environment"]["runtimes"]["openvino"]
    rows = [(c["runtime"], c["provider"]["active"], c["batch_size"]) for c in data["cases"]]
    assert rows == [("onnxruntime", "CPUExecutionProvider", 1), ("onnxruntime", "CPUExecutionProvider", 4),
                    ("openvino", "OpenVINO CPU", 1), ("openvino", "OpenVINO CPU", 4),
                    ("openvino", "OpenVINO CPU", 1), ("openvino", "OpenVINO CPU", 4),
                    ("litert", "LiteRT XNNPACK", 1), ("litert", "LiteRT XNNPACK", 4)]
    bf16 = [c for c in data["cases"] if c["provider"]["options"].get("INFERENCE_PRECISION_HINT") == "bf16"]
    from cnnkit.runtimes.openvino import bf16_supported

    assert {c["precision"] for c in bf16} == {"bf16" if bf16_supported() else "fp32"}
    for c in data["cases"]:
        assert len(c["round_p50_ms"]) == 5 and c["stats"]["count"] >= 10
    assert "OpenVINO CPU" in r.stdout and "LiteRT XNNPACK" in r.stdout and "ORT CPU" in r.stdout


def test_recommend_on_a_real_run(exported_model: Path, tflite_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "rec.json"
    r = _cnnkit("bench", str(exported_model), "--runtime", "onnxruntime,openvino,litert", "--recommend", "--dataset", "digits",
                "--batch-sizes", "1,8", "--min-time", "0.2", "--min-iterations", "20", "--warmup", "2", "--json", str(out))
    assert r.returncode == 0, r.stderr[-1500:]
    rec = json.loads(out.read_text())["recommendation"]
    assert rec["rounds"] == 10 and rec["dataset"]["name"] == "digits"
    labels = {a["runtime"] for a in rec["accuracy"]}
    assert {"onnxruntime", "openvino", "litert"} <= labels
    assert all(a["admissible"] == (a["drop_pp"] <= 0.1) for a in rec["accuracy"])
    assert [b["batch_size"] for b in rec["batches"]] == [1, 8]
    for b in rec["batches"]:
        assert b["default"] == "onnxruntime"
        # Confirmed means a different, faster runtime; otherwise the default is named and the note says why.
        if b["confirmed"]:
            assert b["recommended"] != "onnxruntime" and b["ratio_to_default"] < 1
        else:
            assert b["recommended"] == "onnxruntime" and b["p50_ms"] == b["default_p50_ms"]
        assert b["command"].startswith(f"cnnkit bench {exported_model} --runtime {b['recommended']} --batch-sizes {b['batch_size']}")
    # Reproduce commands print whole, long ones with shell continuations: joined, each is there to copy.
    joined = " ".join(r.stdout.replace("\\\n", " ").split())
    assert "reproduce: cnnkit bench" in joined and all(" ".join(b["command"].split()) in joined for b in rec["batches"])
    # The report reads the result back through the typed loader: the recommendation survives it.
    r = _cnnkit("report", str(out), "-o", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr[-1500:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Recommended deployment" in text and f"--runtime {rec['batches'][0]['recommended']}" in text


def test_missing_runtime_is_one_line_with_the_install_command(exported_model: Path, tmp_path: Path) -> None:
    block = "import sys\nfor m in ('openvino', 'ai_edge_litert', 'ai_edge_litert.interpreter'):\n    sys.modules[m] = None\n"
    for runtime, extra in (("openvino", "cnnkit[openvino]"), ("litert", "cnnkit[litert]")):
        code = block + (f"sys.argv = ['cnnkit', 'bench', {str(exported_model)!r}, '--runtime', 'onnxruntime,{runtime}']\n"
                        "from cnnkit.cli.app import main\nmain()\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert r.returncode == 1, r.stderr[-1500:]
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"runtime {runtime} is not installed" in lines[0] and extra in lines[0], r.stderr


def test_parity_and_eval_on_other_runtimes(trained_model: Path, exported_model: Path, tflite_model: Path, tmp_path: Path) -> None:
    # LiteRT and OpenVINO fp32 meet Keras's fp32 gate; bf16 is gated on decisions, and says so.
    for runtime in ("litert", "openvino"):
        r = _cnnkit("parity", str(trained_model), str(exported_model), "--runtime", runtime, "--dataset", "digits", "--samples", "30")
        assert r.returncode == 0, (runtime, r.stdout[-1500:], r.stderr[-1500:])
        assert "PARITY PASS" in r.stdout and "1e-05" in r.stdout
    out = tmp_path / "p.json"
    r = _cnnkit("parity", str(trained_model), str(exported_model), "--runtime", "openvino:bf16", "--dataset", "digits",
                "--samples", "30", "--json", str(out))
    data = json.loads(out.read_text())
    assert data["provider"]["runtime"] == "openvino" and data["provider"]["precision"] in ("bf16", "fp32")
    assert data["tolerance"]["atol"] is None and "bf16" in data["tolerance"]["reason"]
    out = tmp_path / "e.json"
    r = _cnnkit("eval", str(exported_model), "--runtime", "litert", "--dataset", "digits", "--json", str(out))
    assert r.returncode == 0, r.stderr[-1500:]
    m = json.loads(out.read_text())["models"][0]
    assert m["runtime"] == "litert" and m["provider"]["active"] == "LiteRT XNNPACK" and m["accuracy"] > 0.5
    assert m["size_bytes"] == tflite_model.stat().st_size
    r = _cnnkit("eval", str(exported_model), "--runtime", "onnxruntime,litert", "--dataset", "digits")
    assert r.returncode == 1 and "eval runs one runtime at a time" in r.stderr


def test_loadgen_scenarios_serve_litert_one_interpreter_per_worker(exported_model: Path, tflite_model: Path,
                                                                   tmp_path: Path) -> None:
    """LiteRT as LoadGen's system under test (the .tflite of the same Keras model): every query answered, the
    figures those of LoadGen's own logs, one interpreter per worker."""
    pytest.importorskip("mlperf_loadgen", reason='needs LoadGen: pip install "cnnkit[loadgen]"')
    from cnnkit.bench.scenarios import ScenarioConfig, run_scenarios
    from cnnkit.runtimes.registry import RuntimeChoice
    from tests.bench.test_scenarios import SHORT, _agrees_with_detail

    config = ScenarioConfig(exported_model, ("single-stream", "offline"), tmp_path / "lg",
                            runtime=RuntimeChoice("litert", "fp32"), tflite=tflite_model, workers=2, **SHORT)
    result = run_scenarios(config)
    assert result.runtime == "litert" and result.runner["active"].startswith("LiteRT")
    assert result.serving["runners"] == 2 and "one litert runner each" in result.serving["how"]
    for r in result.runs:
        _agrees_with_detail(tmp_path / "lg" / r.log_dir)
        assert r.served["samples"] > 0
