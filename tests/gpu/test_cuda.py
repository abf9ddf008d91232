"""Runs only where the CUDA execution provider really loads (not where it is merely listed)."""

from pathlib import Path

import pytest

from cnnkit.sessions import SessionConfig, create_session
from tests.unit.test_sessions import CUDA_LOADS, _tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA_LOADS, reason="the CUDA execution provider does not load here")]


def test_cuda_session_is_really_on_cuda() -> None:
    _, info = create_session(_tiny_model(), SessionConfig(provider="cuda"))
    assert info.active == "CUDAExecutionProvider" and not info.fallback


@pytest.mark.integration
def test_parity_on_cuda(trained_model: Path, exported_model: Path) -> None:
    from cnnkit.parity import ParityConfig, check_parity

    result = check_parity(ParityConfig(trained_model, exported_model, dataset="digits", samples=100,
                                       session=SessionConfig(provider="cuda")))
    assert result.provider["active"] == "CUDAExecutionProvider"
    assert result.passed, result.failures
