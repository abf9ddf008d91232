"""QuantizeConfig holds and checks the engine; --auto refuses engine ray itself (library first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnkit.errors import CnnkitError
from cnnkit.quantize.auto import auto_quantize
from cnnkit.quantize.config import QuantizeConfig
from tests.onnx_graphs import tiny_classifier


def test_the_engine_is_checked_by_the_config_and_auto(tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "m.onnx")
    with pytest.raises(CnnkitError, match="unknown --engine 'spark'"):
        QuantizeConfig(model, tmp_path / "q.onnx", engine="spark")
    with pytest.raises(CnnkitError, match="--engine ray checks the accuracy of one quantize run, not --auto's"):
        auto_quantize(QuantizeConfig(model, tmp_path / "q.onnx", engine="ray"))
    assert not (tmp_path / "q.onnx").exists()
