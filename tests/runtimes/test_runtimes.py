"""Runtimes behind the runner contract: parsing --runtime, OpenVINO on an onnx.helper graph, plugin providers,
and the recommendation's 'confirmed lead' rule on measured cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import CnnkitError
from cnnkit.runtimes.registry import RuntimeChoice, parse_runtimes, runtime_label


def test_parse_runtimes() -> None:
    assert parse_runtimes("onnxruntime, openvino:bf16,litert") == (
        RuntimeChoice("onnxruntime", "model"), RuntimeChoice("openvino", "bf16"), RuntimeChoice("litert", "fp32"))
    assert parse_runtimes("ov,openvino:f32,tflite") == (RuntimeChoice("openvino", "fp32"), RuntimeChoice("litert", "fp32"))
    assert parse_runtimes("openvino:bf16")[0].label == "openvino:bf16"
    with pytest.raises(CnnkitError, match="unknown runtime 'tensorrt'"):
        parse_runtimes("onnxruntime,tensorrt")
    with pytest.raises(CnnkitError, match="litert has no precision 'bf16'"):
        parse_runtimes("litert:bf16")
    with pytest.raises(CnnkitError, match="no runtime"):
        parse_runtimes(" , ")


def test_runtime_label_is_the_runtime_item_that_ran() -> None:
    # What ran, named as --runtime takes it: the label parses back to the same choice.
    for choice in parse_runtimes("onnxruntime,openvino,openvino:bf16,litert"):
        assert parse_runtimes(choice.label) == (choice,)
    # A measured precision: ONNX Runtime runs the model's own (an fp16 model is still --runtime onnxruntime).
    assert runtime_label("onnxruntime", "fp16") == "onnxruntime"
    assert runtime_label("openvino", "fp32") == "openvino" and runtime_label("openvino", "bf16") == "openvino:bf16"
    # Where a table has no precision column, the model's own precision is named too (in the same format).
    assert runtime_label("onnxruntime", "fp16", model_precision=True) == "onnxruntime:fp16"
    assert runtime_label("onnxruntime", "fp32", model_precision=True) == "onnxruntime"
    assert runtime_label("openvino", "bf16", model_precision=True) == "openvino:bf16"


def _conv_model(path: Path) -> Path:
    """A small NHWC image classifier graph: Transpose -> Conv -> Relu -> GlobalAveragePool -> Gemm -> Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.1, (4, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 0.5, (4, 3)).astype(np.float32), "fc"),
        numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Reshape", ["g", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 8, 8, 1])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def test_openvino_runner_matches_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from cnnkit.runtimes.onnxruntime import OnnxRuntimeRunner
    from cnnkit.runtimes.openvino import bf16_supported
    from cnnkit.runtimes.registry import create_runner

    model = _conv_model(tmp_path / "tiny.onnx")
    x = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 1)).astype(np.float32) / 255
    want = OnnxRuntimeRunner(model).infer({"images": x})["probabilities"]
    assert np.ptp(want, axis=0).max() > 1e-4  # outputs vary with the input: a pass means something
    fp32 = create_runner(RuntimeChoice("openvino", "fp32"), model)
    got = fp32.infer({"images": x})
    assert list(got) == ["probabilities"] and fp32.info.precision == "fp32"
    np.testing.assert_allclose(got["probabilities"], want, atol=1e-5)
    static = create_runner(RuntimeChoice("openvino", "fp32"), model, batch_size=5)
    assert static.input_shape[0] == 5 and static.info.options["static_batch"] == 5
    bf16 = create_runner(RuntimeChoice("openvino", "bf16"), model)
    # The precision stated is the one the compiled model reports, never fp32 when it computes in bf16.
    assert bf16.info.precision == ("bf16" if bf16_supported() else "fp32")
    np.testing.assert_allclose(bf16.infer({"images": x})["probabilities"], want, atol=2e-2)
    run = fp32.timed_call(x)
    run.run()
    np.testing.assert_allclose(run.outputs()["probabilities"], want, atol=1e-5)


def test_plugin_provider_without_device_is_a_clear_error() -> None:
    pytest.importorskip("onnxruntime_ep_openvino")
    from cnnkit.runtimes.plugins import plugin_statuses
    from cnnkit.runtimes.sessions import ProviderError, SessionConfig, create_session, probe_model_bytes

    status = next(p for p in plugin_statuses() if p.distribution == "onnxruntime-ep-openvino")
    assert status.error is None and status.library and Path(status.library).is_file()
    assert status.ep_names == ("OpenVINOExecutionProvider",)
    if status.devices:  # an Intel machine: the plugin really runs the session
        _, info = create_session(probe_model_bytes(), SessionConfig(provider="openvino"))
        assert info.active == "OpenVINOExecutionProvider"
        return
    with pytest.raises(ProviderError, match="exposes no device on this machine") as exc:
        create_session(probe_model_bytes(), SessionConfig(provider="openvino"))
    assert "--runtime openvino" in exc.value.one_line()
    _, info = create_session(probe_model_bytes(), SessionConfig(provider="openvino", allow_fallback=True))
    assert info.fallback and info.active == "CPUExecutionProvider" and "no device" in info.fallback_reason


def test_bench_with_a_plugin_provider_that_has_no_device_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime_ep_openvino")
    import subprocess
    import sys

    from cnnkit.runtimes.plugins import plugin_statuses

    if any(p.devices for p in plugin_statuses() if p.distribution == "onnxruntime-ep-openvino"):
        pytest.skip("the OpenVINO plugin exposes a device on this machine")
    model = _conv_model(tmp_path / "tiny.onnx")
    r = subprocess.run([sys.executable, "-m", "cnnkit", "bench", str(model), "--provider", "openvino", "--batch-sizes", "1",
                        "--min-time", "0", "--min-iterations", "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "exposes no device on this machine" in r.stderr and "--runtime openvino" in r.stderr


def test_doctor_lists_plugins() -> None:
    from cnnkit.runtimes.doctor import run_doctor

    report = run_doctor()
    assert set(report.runtimes) == {"onnxruntime", "openvino", "litert"}
    for plugin in report.plugins:
        assert plugin.distribution.startswith("onnxruntime-ep-")
        for ep in plugin.ep_names:
            status = next(p for p in report.plugin_providers if p.name == ep)
            assert status.loads == any(d.ep_name == ep for d in plugin.devices) or plugin.error


def _case(runtime: str, precision: str, rounds: list[float], batch: int = 1):  # noqa: ANN202
    from cnnkit.bench.result import BenchCase
    from cnnkit.stats import LatencyStats

    samples = [int(r * 1e6) for r in rounds for _ in range(3)]
    provider = {"requested": runtime, "providers": [runtime], "active": runtime, "fallback": False, "options": {}}
    return BenchCase("m.onnx", "0" * 64, precision, batch, provider, LatencyStats.from_samples(samples, batch),
                     tuple(samples), 0, 1.0, 1.0, 1.0, False, False, runtime=runtime, round_p50_ms=tuple(rounds))


def _result(cases: list):  # noqa: ANN202
    from cnnkit.bench.result import SCHEMA, BenchResult

    config = {"models": ["m.onnx"], "batch_sizes": [1], "interleaved_rounds": 10, "tflite": None,
              "session": {"provider": "cpu", "intra_op_threads": 0, "inter_op_threads": 0, "allow_spinning": None,
                          "graph_optimization": "all", "execution_mode": "sequential"}}
    return BenchResult(SCHEMA, "now", config, {}, tuple(cases))


def test_recommend_confirms_a_lead_only_when_every_round_agrees() -> None:
    from cnnkit.bench.recommend import CandidateAccuracy, recommend

    ort = _case("onnxruntime", "fp32", [1.0] * 10)
    steady = _case("openvino", "bf16", [0.5] * 10)
    lucky = _case("litert", "fp32", [0.3, 0.3, 0.3, 0.3, 0.3, 2, 2, 2, 2, 0.3])
    acc = [CandidateAccuracy("m.onnx", "onnxruntime", "fp32", 0.9, 0.0, True),
           CandidateAccuracy("m.onnx", "openvino:bf16", "bf16", 0.9, 0.0, True),
           CandidateAccuracy("m.onnx", "litert", "fp32", 0.9, 0.0, True)]
    rec = recommend(_result([ort, steady]), acc[:2], 0.1, {"name": "digits"}).batches[0]
    assert rec.recommended == "openvino:bf16" and rec.confirmed and rec.ratio_to_default == pytest.approx(0.5)
    assert rec.command.startswith("cnnkit bench m.onnx --runtime openvino:bf16 --batch-sizes 1")
    # Over the accuracy budget: never recommended, however fast.
    over = [acc[0], CandidateAccuracy("m.onnx", "openvino:bf16", "bf16", 0.8, 10.0, False)]
    rec = recommend(_result([ort, steady]), over, 0.1, {}).batches[0]
    assert rec.recommended == "onnxruntime" and not rec.confirmed and "over the accuracy budget: openvino:bf16" in rec.note
    # A lead half the rounds contradict is not confirmed: the default stays.
    rec = recommend(_result([ort, lucky]), [acc[0], acc[2]], 0.1, {}).batches[0]
    assert rec.fastest == "litert" and rec.recommended == "onnxruntime" and not rec.confirmed
    assert rec.note.startswith("no confirmed lead")
    # A steady lead is recommended even where a lucky one has the lower median.
    rec = recommend(_result([ort, steady, lucky]), acc, 0.1, {}).batches[0]
    assert rec.fastest == "litert" and rec.recommended == "openvino:bf16" and rec.confirmed
    assert "litert had the lowest median but the rounds do not confirm its lead" in rec.note


def test_report_shows_the_recommendation() -> None:
    from dataclasses import replace

    from cnnkit.bench.recommend import CandidateAccuracy, recommend
    from cnnkit.report.sections import recommendation_section, to_markdown

    ort = _case("onnxruntime", "fp32", [1.0] * 10)
    lucky = _case("litert", "fp32", [0.3, 0.3, 0.3, 0.3, 0.3, 2, 2, 2, 2, 0.3])
    acc = [CandidateAccuracy("m.onnx", "onnxruntime", "fp32", 0.9, 0.0, True),
           CandidateAccuracy("m.onnx", "litert", "fp32", 0.85, 5.0, False)]
    rec = recommend(_result([ort, lucky]), acc, 0.1, {"name": "digits", "evaluated_samples": 360})
    text = "\n".join(to_markdown(recommendation_section([replace(_result([ort, lucky]), recommendation=rec.to_dict())],
                                                         compact=False)))
    assert "## Recommended deployment" in text and "| m.onnx | litert | fp32 | 85.00 % | -5.00 pp | no (over budget) |" in text
    assert "| m.onnx | 1 | onnxruntime | 1 | 1 | default is fastest |" in text
    assert "`cnnkit bench m.onnx --runtime onnxruntime --batch-sizes 1 --threads 0" in text
    assert recommendation_section([_result([])], compact=False) is None


def test_export_tflite_refuses_an_onnx_only_option(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "cnnkit", "export", str(tmp_path / "m.keras"), "--format", "tflite",
                        "-o", str(tmp_path / "m.tflite"), "--input-dtype", "uint8"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "--input-dtype uint8 applies to ONNX exports only" in r.stderr, r.stderr
    assert not (tmp_path / "m.tflite").exists()


def test_provider_options_reach_the_provider_or_are_refused(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from cnnkit.cli.options import parse_provider_options
    from cnnkit.runtimes.sessions import ProviderError, SessionConfig, create_session, probe_model_bytes

    assert parse_provider_options(["device_type=CPU", " precision = FP32 "]) == (("device_type", "CPU"), ("precision", "FP32"))
    with pytest.raises(CnnkitError, match="'device_type' is not KEY=VALUE"):
        parse_provider_options(["device_type"])
    config = SessionConfig(provider="cuda", provider_options=(("arena_extend_strategy", "kSameAsRequested"),))
    assert SessionConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # ONNX Runtime would ignore options given to its CPU provider: cnnkit refuses them instead.
    with pytest.raises(ProviderError, match="the CPU provider takes no provider options, got use_arena"):
        create_session(probe_model_bytes(), SessionConfig(provider_options=(("use_arena", "0"),)))
    model = _conv_model(tmp_path / "tiny.onnx")
    r = subprocess.run([sys.executable, "-m", "cnnkit", "bench", str(model), "--provider-option", "use_arena=0",
                        "--batch-sizes", "1", "--min-time", "0", "--min-iterations", "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "takes no provider options" in r.stderr and len(r.stderr.strip().splitlines()) == 1
