"""The fault-injection tests' model and data: a tiny CNN built with onnx.helper and a tiny IDX set."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_idx_dir
from tests.faults.models import tiny_cnn


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_cnn(tmp_path / "model.onnx")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_idx_dir(tmp_path / "mnist", n_train=40, n_test=20)
