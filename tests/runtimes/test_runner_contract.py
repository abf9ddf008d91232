"""The one runtime contract (cnnkit.runtimes.base) kept by the ONNX Runtime and OpenVINO runners, on onnx.helper
graphs: built from a choice, ``infer`` on a batch, a timed call that times real inferences, one RunnerInfo
that says what ran and survives JSON. (LiteRT and Keras need TensorFlow: tests/runtimes/test_seed_cnn.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnnkit.bench.timing import time_calls
from cnnkit.runtimes.base import ImageRunner, RunnerInfo, run_batched
from cnnkit.runtimes.registry import DEFAULT_RUNTIME, RuntimeChoice, create_runner
from cnnkit.runtimes.sessions import SessionConfig
from tests.onnx_graphs import tiny_classifier


def check_contract(runner: object, x: np.ndarray, runtime: str) -> dict[str, np.ndarray]:
    """What every runner must do on a batch ``x`` of its input; returns its outputs."""
    out = runner.infer({runner.input_name: x})
    assert tuple(out) == runner.output_names and all(len(v) == len(x) for v in out.values())
    info = runner.info
    assert info.runtime == runtime and info.active and info.providers and info.version and not info.on_gpu
    assert info.device == "cpu" and info.precision == "fp32" and runner.build_ms > 0
    assert RunnerInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info  # JSON round trip
    assert set(info.provider_record()) == {"requested", "providers", "fallback", "fallback_reason", "options", "active"}
    timed = runner.timed_call(x)
    samples = time_calls(timed.run, warmup=1, min_iterations=5, min_time_s=0)
    assert len(samples) >= 5 and all(s > 0 for s in samples)  # real calls, each timed on its own
    for name, value in timed.outputs().items():  # the timed call computes what infer does
        np.testing.assert_allclose(value, out[name], atol=1e-5)
    assert not timed.io_binding  # on the CPU there is no copy to leave out
    return out


def test_onnxruntime_runner_keeps_the_contract(tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "m.onnx", layout="NCHW", batch="N")
    runner = create_runner(DEFAULT_RUNTIME, model, SessionConfig(intra_op_threads=1))
    x = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8)).astype(np.float32)
    out = check_contract(runner, x, "onnxruntime")
    assert np.ptp(out["probs"], axis=0).max() > 1e-3  # the outputs depend on the input: agreement means something
    info = runner.info
    # What ran, read back from the session: the provider, its options as built, the file.
    assert info.providers == ("CPUExecutionProvider",) and info.active == "CPUExecutionProvider"
    assert info.threads == 1 and info.options["intra_op_threads"] == 1 and not info.fallback
    assert info.model_path == str(model) and info.model_bytes == model.stat().st_size
    as_json = lambda d: json.loads(json.dumps(d))  # noqa: E731
    assert info.provider_record() == as_json(runner.session_info.to_dict())  # the record results stored before
    with_copies = runner.timed_call(x, include_copies=True)  # on the CPU: the same plain session.run
    with_copies.run()
    np.testing.assert_allclose(with_copies.outputs()["probs"], out["probs"], atol=1e-6)


def test_onnxruntime_runner_from_bytes_and_its_precision(tmp_path: Path) -> None:
    """A model held in memory runs too; the precision stated is the model's own (uint8 input is still fp32)."""
    model = tiny_classifier(tmp_path / "u8.onnx", layout="NHWC", batch=2, dtype="uint8")
    runner = create_runner(DEFAULT_RUNTIME, model.read_bytes(), label="in memory")
    assert runner.input_dtype == np.uint8 and runner.image is not None and runner.image.batch == 2
    assert runner.info.precision == "fp32" and runner.info.model_path is None
    assert runner.info.model_bytes == model.stat().st_size
    x = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 3)).astype(np.uint8)
    out = runner.infer({runner.input_name: x})  # a fixed batch of 2 runs 5 images in chunks
    assert out["probs"].shape == (5, 5)
    timed = runner.timed_call(x[:2])
    timed.run()
    np.testing.assert_allclose(timed.outputs()["probs"], out["probs"][:2], atol=1e-6)


def test_image_runner_keeps_the_contract(tmp_path: Path) -> None:
    """cnnkit's NHWC pixels, converted once outside the timing, into an NCHW model."""
    model = tiny_classifier(tmp_path / "m.onnx", layout="NCHW", batch="N")
    inner = create_runner(DEFAULT_RUNTIME, model)
    runner = ImageRunner(inner, inner.image)
    pixels = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    assert runner.input_shape[1:] == (8, 8, 3) and runner.info is inner.info
    want = run_batched(inner, pixels.transpose(0, 3, 1, 2).astype(np.float32), 2)["probs"]
    timed = runner.timed_call(pixels)
    timed.run()
    np.testing.assert_allclose(timed.outputs()["probs"], want, atol=1e-6)
    np.testing.assert_allclose(runner.infer({runner.input_name: pixels})["probs"], want, atol=1e-6)


def test_openvino_runner_keeps_the_contract(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    model = tiny_classifier(tmp_path / "m.onnx", layout="NHWC", batch="N")
    x = np.random.default_rng(3).integers(0, 256, (4, 8, 8, 3)).astype(np.float32)
    want = create_runner(DEFAULT_RUNTIME, model).infer({"image": x})["probs"]
    runner = create_runner(RuntimeChoice("openvino", "fp32"), model, SessionConfig(intra_op_threads=1), batch_size=4)
    out = check_contract(runner, x, "openvino")
    np.testing.assert_allclose(out["probs"], want, atol=1e-5)
    info = runner.info
    assert info.active == "OpenVINO CPU" and info.threads == 1 and info.options["static_batch"] == 4
    assert info.model_path == str(model) and runner.input_shape[0] == 4


def test_runner_info_gpu_is_read_from_the_device() -> None:
    """The one place "is this on a GPU?" is decided: the device the runtime reports, not a provider string."""
    from cnnkit.runtimes.onnxruntime import provider_device, recorded_info

    base = dict(runtime="onnxruntime", requested="CUDAExecutionProvider", precision="fp32", threads=None, version="x")
    cuda = RunnerInfo(providers=("CUDAExecutionProvider", "CPUExecutionProvider"), active="CUDAExecutionProvider",
                      device=provider_device("CUDAExecutionProvider", 1), **base)
    assert cuda.device == "cuda:1" and cuda.on_gpu
    fell_back = RunnerInfo(providers=("CPUExecutionProvider",), active="CPUExecutionProvider", fallback=True,
                           fallback_reason="libcublasLt.so.13 not found",
                           device=provider_device("CPUExecutionProvider"), **base)
    assert not fell_back.on_gpu and "FALLBACK" in fell_back.headline()
    assert RunnerInfo.from_dict(json.loads(json.dumps(fell_back.to_dict()))) == fell_back
    # A stored result's provider object says the same (bench's --tune flags, --recommend's command).
    assert recorded_info(cuda.provider_record()).on_gpu and not recorded_info(fell_back.provider_record()).on_gpu
    assert provider_device("OpenVINOExecutionProvider") == "openvino" and provider_device("XnnpackExecutionProvider") == "cpu"
