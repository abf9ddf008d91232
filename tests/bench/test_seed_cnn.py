"""bench, eval and doctor on real ONNX Runtime sessions of the exported seed CNN."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cnnkit.bench.benchmark import run_benchmark
from cnnkit.bench.config import BenchConfig
from cnnkit.bench.result import SCHEMA, BenchResult
from cnnkit.bench.timing import measure_overhead
from cnnkit.bench.tune import tune_candidates
from cnnkit.errors import CnnkitError, ModelFileError
from cnnkit.evaluate.accuracy import EvalConfig, EvalResult, evaluate_models
from cnnkit.runtimes.sessions import SessionConfig, SessionError

pytestmark = pytest.mark.integration


def _quick(models, **kw) -> BenchConfig:
    return BenchConfig(models=tuple(models), **({"batch_sizes": (1, 3), "warmup": 2, "min_time_s": 0.0,
                                                 "min_iterations": 5} | kw))


def test_bench_records_everything(exported_model: Path) -> None:
    steps = []
    result = run_benchmark(_quick([exported_model]), progress=lambda what, done, total: steps.append((done, total)))
    assert result.schema == SCHEMA and [c.batch_size for c in result.cases] == [1, 3]
    for case in result.cases:
        assert len(case.samples_ns) == case.stats.count >= 5
        assert case.stats.p50_ms == pytest.approx(np.median(case.samples_ns) / 1e6)
        assert case.provider["active"] == "CPUExecutionProvider" and case.precision == "fp32"
        assert case.session_create_ms > 0 and case.first_inference_ms > 0 and case.peak_rss_mb > 0
        assert not case.io_binding  # CPU: plain session.run
    env = result.environment
    assert env["cpu"]["model"] and env["packages"]["cnnkit"] and "git_commit" in env and "gpu" in env
    assert result.config["clock"] == "time.perf_counter_ns" and result.config["session"]["provider"] == "cpu"
    assert steps[-1][0] == steps[-1][1] > 0


def test_bench_result_round_trips(exported_model: Path, tmp_path: Path) -> None:
    result = run_benchmark(_quick([exported_model], batch_sizes=(2,)))
    path = tmp_path / "b.json"
    path.write_text(json.dumps(result.to_dict()))
    again = BenchResult.load(path)
    assert json.loads(json.dumps(again.to_dict())) == json.loads(path.read_text())
    assert again.cases[0].stats == result.cases[0].stats and again.cases[0].samples_ns == result.cases[0].samples_ns
    with pytest.raises(CnnkitError, match="not a cnnkit benchmark result"):
        BenchResult.from_dict({"schema": "other/1"})


def test_tune_searches_and_keeps_what_it_can_confirm(exported_model: Path) -> None:
    result = run_benchmark(_quick([exported_model], batch_sizes=(1,), tune=True, tune_time_s=0.15))
    candidates = tune_candidates(SessionConfig(), on_gpu=False)
    assert len(result.trials) == len(candidates) > 4
    assert {t.options["allow_spinning"] for t in result.trials} >= {True, False}
    assert all(t.count >= 3 * 3 and t.p50_ms > 0 for t in result.trials)  # 3 rounds, >= 3 runs each
    base = result.trials[0]
    assert base.options["intra_op_threads"] == 0 and base.ratio_to_base == 1.0
    pick = result.chosen_trial(str(exported_model), 1)
    assert [t.chosen for t in result.trials].count(True) == 1 and result.chosen_trial(str(exported_model), 2) is None
    assert pick is base or pick.ratio_to_base < 1.0
    case = result.cases[0]
    assert case.tuned and {k: case.provider["options"][k] for k in pick.options} == pick.options


def test_tune_records_a_candidate_that_cannot_run_and_goes_on(exported_model: Path, monkeypatch) -> None:
    import dataclasses

    import cnnkit.bench.benchmark

    # ONNX Runtime refuses a session with an out-of-range log level: a stand-in for a candidate the provider
    # cannot run (on CUDA: a CUDA graph with nodes left on the CPU).
    monkeypatch.setattr(cnnkit.bench.benchmark, "tune_candidates",
                        lambda base, active: [dataclasses.replace(base, log_severity=9), base])
    result = run_benchmark(_quick([exported_model], batch_sizes=(1,), tune=True, tune_time_s=0.0))
    bad, good = result.trials
    assert bad.p50_ms is None and bad.count == 0 and "log_severity_level" in bad.error
    assert good.error is None and good.chosen and result.chosen_trial(str(exported_model), 1) == good
    assert result.cases[0].provider["options"]["log_severity"] == 3
    again = BenchResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.trials == result.trials

    monkeypatch.setattr(cnnkit.bench.benchmark, "tune_candidates", lambda base, active: [dataclasses.replace(base, log_severity=9)])
    with pytest.raises(SessionError, match="cannot create a session .* with these options: .*log_severity_level"):
        run_benchmark(_quick([exported_model], batch_sizes=(1,), tune=True, tune_time_s=0.0))


def test_cuda_tune_space_covers_conv_search_and_graphs() -> None:
    space = tune_candidates(SessionConfig(provider="cuda"), on_gpu=True)
    assert {c.cudnn_conv_algo_search for c in space} == {"EXHAUSTIVE", "HEURISTIC", "DEFAULT"}
    assert {c.cuda_graph for c in space} == {True, False}


def test_uint8_model_is_fed_uint8(trained_model: Path, tmp_path: Path) -> None:
    from cnnkit.choices import InputDtype
    from cnnkit.export.onnx import ExportConfig, export_onnx

    export_onnx(ExportConfig(trained_model, tmp_path / "u8.onnx", input_dtype=InputDtype.UINT8))
    result = run_benchmark(_quick([tmp_path / "u8.onnx"], batch_sizes=(2,)))
    assert result.cases[0].stats.count >= 5


def test_harness_overhead_against_a_bare_loop(exported_model: Path) -> None:
    """The benchmark that shows the harness adds nothing; the 5 % goal is checked in scripts/bench_overhead.py."""
    r = measure_overhead(exported_model, batch_size=1, rounds=4, round_time_s=0.05)
    assert r.rounds == 4 and r.harness_p50_ms > 0 and r.bare_p50_ms > 0
    assert math.isfinite(r.overhead)


def test_bad_model_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="bad.onnx is a text file, not an ONNX model"):
        run_benchmark(_quick([bad]))
    bad.write_bytes(bytes([0x08, 0xFF, 0xFF, 0x13, 0x00, 0x91]))  # binary, but no complete protobuf
    with pytest.raises(ModelFileError, match="cannot read .*bad.onnx as ONNX"):
        run_benchmark(_quick([bad]))
    with pytest.raises(ModelFileError, match="not found"):
        run_benchmark(_quick([tmp_path / "none.onnx"]))


def test_non_image_model_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(tmp_path / "vec.onnx"))
    with pytest.raises(ModelFileError, match="not an image tensor"):
        run_benchmark(_quick([tmp_path / "vec.onnx"]))


def test_eval_matches_a_hand_count(exported_model: Path, trained_model: Path) -> None:
    from cnnkit.data.datasets import load_dataset
    from cnnkit.runtimes.onnxruntime import OnnxRuntimeRunner

    result = evaluate_models(EvalConfig((exported_model, exported_model), dataset="digits", batch_size=50))
    ds = load_dataset("digits")
    probs = OnnxRuntimeRunner(exported_model).infer({"images": ds.x_test.astype(np.float32)})["probabilities"]
    preds = probs.argmax(axis=1)
    m = result.models[0]
    assert m.samples == len(ds.y_test) and m.accuracy == pytest.approx(np.mean(preds == ds.y_test))
    cm = np.array(m.confusion)
    assert cm.sum() == len(ds.y_test) and np.trace(cm) == int(np.sum(preds == ds.y_test))
    for c in range(10):
        mask = ds.y_test == c
        assert m.per_class_accuracy[c] == pytest.approx(np.mean(preds[mask] == c))
    assert result.models[1].agreement_with_first == 1.0
    data = json.loads(json.dumps(result.to_dict()))
    assert json.loads(json.dumps(EvalResult.from_dict(data).to_dict())) == data


def test_eval_resizes_a_dataset_that_does_not_fit(exported_model: Path) -> None:
    """32x32 colour images into a 28x28 grey model: the preprocessing record resizes and converts them."""
    from cnnkit.data.datasets import Dataset, DatasetName, load_dataset

    digits = load_dataset("digits")
    big = np.stack([np.asarray(__import__("PIL.Image").Image.fromarray(im[..., 0]).resize((32, 32)).convert("RGB"))
                    for im in digits.x_test])
    odd = Dataset(DatasetName.MNIST, "odd", np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int64),
                  big, digits.y_test, tuple("0123456789"))
    resized = evaluate_models(EvalConfig((exported_model,)), dataset=odd).models[0]
    native = evaluate_models(EvalConfig((exported_model,)), dataset=digits).models[0]
    assert resized.preprocess["size"] == [28, 28] and resized.preprocess["channel_order"] == "grayscale"
    assert resized.accuracy > 0.5 and abs(resized.accuracy - native.accuracy) < 0.1
    assert native.top5_accuracy >= native.accuracy


def test_doctor_reports_providers_that_really_load() -> None:
    from cnnkit.runtimes.doctor import check_provider, run_doctor

    report = run_doctor()
    cpu = next(p for p in report.providers if p.name == "CPUExecutionProvider")
    assert cpu.loads and report.usable("CPUExecutionProvider")
    assert set(report.providers_listed) == {p.name for p in report.providers}
    assert check_provider(report, "cpu") == ("CPUExecutionProvider", True)
    assert report.cpu["usable_cores"] >= 1 and isinstance(report.cpu["isa"], list)
    assert set(report.gpu_libraries) >= {"cudart", "cudnn", "cublasLt"}
    json.dumps(report.to_dict())



