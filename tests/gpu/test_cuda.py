"""Runs only where the CUDA execution provider really loads (not where it is merely listed)."""

from pathlib import Path

import pytest

from cnnkit.runtimes.sessions import SessionConfig, create_session
from tests.runtimes.test_sessions import CUDA_LOADS, _tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA_LOADS, reason="the CUDA execution provider does not load here")]


def test_cuda_session_is_really_on_cuda() -> None:
    _, info = create_session(_tiny_model(), SessionConfig(provider="cuda"))
    assert info.active == "CUDAExecutionProvider" and not info.fallback


@pytest.mark.integration
def test_parity_on_cuda(trained_model: Path, exported_model: Path) -> None:
    pytest.importorskip("tensorflow", reason="the Keras reference needs TensorFlow (gpu_proof.sh compares stored outputs)")
    from cnnkit.parity.check import ParityConfig, check_parity

    result = check_parity(ParityConfig(trained_model, exported_model, dataset="digits", samples=100,
                                       session=SessionConfig(provider="cuda")))
    assert result.provider["active"] == "CUDAExecutionProvider"
    assert result.passed, result.failures


@pytest.mark.integration
def test_bench_on_cuda_binds_inputs_and_outputs_on_the_device(exported_model: Path) -> None:
    from cnnkit.bench.benchmark import run_benchmark
    from cnnkit.bench.config import BenchConfig

    quick = {"batch_sizes": (1, 8), "warmup": 2, "min_time_s": 0.0, "min_iterations": 5}
    bound = run_benchmark(BenchConfig(models=(exported_model,), session=SessionConfig(provider="cuda"), **quick))
    assert all(c.io_binding and c.provider["active"] == "CUDAExecutionProvider" for c in bound.cases)
    copies = run_benchmark(BenchConfig(models=(exported_model,), session=SessionConfig(provider="cuda"),
                                       include_copies=True, **quick))
    assert not any(c.io_binding for c in copies.cases)


@pytest.mark.integration
def test_tune_on_cuda_tries_conv_search_and_cuda_graphs(exported_model: Path) -> None:
    from cnnkit.bench.benchmark import run_benchmark
    from cnnkit.bench.config import BenchConfig

    result = run_benchmark(BenchConfig(models=(exported_model,), batch_sizes=(4,), session=SessionConfig(provider="cuda"),
                                       tune=True, tune_time_s=0.0, warmup=2, min_time_s=0.0, min_iterations=5))
    assert len(result.trials) == 6 and {t.options["cuda_graph"] for t in result.trials} == {True, False}
    # A CUDA graph needs every node on the CUDA provider; where ONNX Runtime refuses, the trial says why.
    assert all((t.p50_ms is None) == bool(t.error) for t in result.trials)
    assert result.chosen_trial(str(exported_model), 4) is not None and result.cases[0].tuned


def test_memory_child_reads_gpu_memory_on_cuda(tmp_path: Path) -> None:
    from cnnkit.bench.memory import measure_in_child
    from tests.bench.test_measurements import image_model

    model = image_model(tmp_path / "tiny.onnx")
    m = measure_in_child(model, SessionConfig(provider="cuda").to_dict(), (28, 28, 1), "float32", "images", (1, 8), 1, runs=2)
    assert m.provider == "CUDAExecutionProvider"
    assert m.gpu_mb is not None and m.gpu_mb > 0  # the CUDA context and the arena are held by the child


def test_onnxruntime_runner_on_cuda_times_device_resident_calls(tmp_path: Path) -> None:
    """The runner's timed call is bench's IO-binding path: input and outputs on the device, the same numbers."""
    import numpy as np

    from cnnkit.bench.timing import time_calls
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner
    from tests.onnx_graphs import tiny_classifier

    model = tiny_classifier(tmp_path / "m.onnx", layout="NCHW", batch="N")
    runner = create_runner(DEFAULT_RUNTIME, model, SessionConfig(provider="cuda"))
    assert runner.info.on_gpu and runner.info.device == "cuda:0" and runner.info.active == "CUDAExecutionProvider"
    x = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8)).astype(np.float32)
    want = create_runner(DEFAULT_RUNTIME, model).infer({runner.input_name: x})["probs"]
    timed = runner.timed_call(x)
    assert timed.io_binding
    assert len(time_calls(timed.run, warmup=1, min_iterations=5, min_time_s=0)) >= 5
    np.testing.assert_allclose(timed.outputs()["probs"], want, atol=1e-4)
    copies = runner.timed_call(x, include_copies=True)
    assert not copies.io_binding
    copies.run()
    np.testing.assert_allclose(copies.outputs()["probs"], want, atol=1e-4)
