"""Provider resolution and the no-silent-fallback rule, on real ONNX Runtime sessions."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cnnkit.errors import ModelFileError
from cnnkit.runtimes.sessions import (
    ProviderError, SessionConfig, _load_failure_reason, create_session, probe_model_bytes, resolve_provider,
)


_tiny_model = probe_model_bytes


def _really_loads(provider: str) -> bool:
    if provider not in ort.get_available_providers():
        return False
    try:
        session = ort.InferenceSession(_tiny_model(), providers=[provider, "CPUExecutionProvider"])
    except Exception:  # noqa: BLE001
        return False
    return session.get_providers()[0] == provider


CUDA_LOADS = _really_loads("CUDAExecutionProvider")


def test_cpu_session_runs() -> None:
    session, info = create_session(_tiny_model(), SessionConfig(provider="cpu", intra_op_threads=1))
    assert info.active == "CPUExecutionProvider" and not info.fallback
    assert info.options["intra_op_threads"] == 1
    out = session.run(None, {"x": np.array([[-1, 2, -3, 4]], np.float32)})[0]
    assert out.tolist() == [[0, 2, 0, 4]]


def test_aliases_and_full_names() -> None:
    assert resolve_provider("cpu") == resolve_provider("CPUExecutionProvider") == "CPUExecutionProvider"


def test_unknown_provider_lists_what_exists() -> None:
    with pytest.raises(ProviderError, match="unknown or uninstalled execution provider 'warp'") as info:
        resolve_provider("warp")
    assert "cpu" in info.value.one_line()


GPU_PROVIDERS = [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")]


@pytest.mark.parametrize(("name", "provider"), GPU_PROVIDERS)
def test_gpu_provider_that_does_not_load_is_an_error_not_a_silent_fallback(name: str, provider: str) -> None:
    if _really_loads(provider):
        pytest.skip(f"{provider} really loads here")
    if provider not in ort.get_available_providers():
        with pytest.raises(ProviderError, match="uninstalled"):
            create_session(_tiny_model(), SessionConfig(provider=name))
        return
    # onnxruntime-gpu lists CUDA and TensorRT on a machine where they cannot load: the session would quietly
    # use the CPU.
    with pytest.raises(ProviderError) as info:
        create_session(_tiny_model(), SessionConfig(provider=name))
    line = info.value.one_line()
    assert f"{provider} was requested but the session runs on CPUExecutionProvider" in line
    assert "onnxruntime-gpu[cuda,cudnn]" in line and "--allow-fallback" in line
    assert ("libnvinfer" in line) == (name == "tensorrt")


@pytest.mark.parametrize(("name", "provider"), GPU_PROVIDERS)
def test_fallback_when_allowed_is_said(name: str, provider: str) -> None:
    if _really_loads(provider) or provider not in ort.get_available_providers():
        pytest.skip(f"needs {provider} listed but not loadable")
    session, info = create_session(_tiny_model(), SessionConfig(provider=name, allow_fallback=True))
    assert info.fallback and info.active == "CPUExecutionProvider" and info.fallback_reason
    assert "FALLBACK" in info.headline() and provider in info.headline()


def test_failure_reasons_from_onnxruntime_logs() -> None:
    log = ("Failed to load library libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: "
           "cannot open shared object file: No such file or directory")
    assert _load_failure_reason(log, "CUDAExecutionProvider") == "libcublasLt.so.13 not found"
    assert "CUDA failure 100" in _load_failure_reason("CUDA failure 100: no CUDA-capable device is detected ;", "CUDAExecutionProvider")


def test_missing_and_corrupt_models(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        create_session(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ModelFileError, match="cannot load .*bad.onnx in ONNX Runtime"):
        create_session(bad)


def test_session_options_are_applied() -> None:
    from cnnkit.choices import ExecutionMode, GraphOptimization
    from cnnkit.runtimes.sessions import session_options

    so = session_options(SessionConfig(intra_op_threads=2, graph_optimization=GraphOptimization.BASIC,
                                       execution_mode=ExecutionMode.PARALLEL, allow_spinning=False))
    assert so.intra_op_num_threads == 2
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert onnx  # imported for the model helpers


def test_session_config_round_trips_through_a_dict() -> None:
    from cnnkit.choices import CudnnConvAlgoSearch, ExecutionMode, GraphOptimization

    config = SessionConfig(provider="cuda", intra_op_threads=1, inter_op_threads=2, allow_spinning=False,
                           graph_optimization=GraphOptimization.EXTENDED, execution_mode=ExecutionMode.PARALLEL,
                           cudnn_conv_algo_search=CudnnConvAlgoSearch.HEURISTIC, cuda_graph=True, device_id=1)
    data = config.to_dict()
    assert data["cudnn_conv_algo_search"] == "HEURISTIC" and data["graph_optimization"] == "extended"
    assert SessionConfig.from_dict(json.loads(json.dumps(data))) == config
    assert SessionConfig.from_dict({"intra_op_threads": 1, "p50_ms": 0.1}) == SessionConfig(intra_op_threads=1)


def test_cuda_provider_options_use_onnxruntime_spelling() -> None:
    from cnnkit.choices import CudnnConvAlgoSearch
    from cnnkit.runtimes.sessions import _provider_chain

    chain = _provider_chain("CUDAExecutionProvider", SessionConfig(cudnn_conv_algo_search=CudnnConvAlgoSearch.DEFAULT,
                                                                   cuda_graph=True, device_id=3))
    assert chain == [("CUDAExecutionProvider", {"device_id": 3, "cudnn_conv_algo_search": "DEFAULT",
                                                "enable_cuda_graph": "1"}), "CPUExecutionProvider"]
