"""A step that takes seconds says what it is doing as it starts (on a terminal's stderr): loading TensorFlow,
tracing and converting, running each side of a parity check. Piped stderr stays results and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_terminal_width import in_terminal
from tests.conftest import make_idx_dir
from tests.faults.models import tiny_cnn


def _before(lines: list[str], *steps: str) -> list[int]:
    """The index of the first line that starts with each step; they must come in this order."""
    at = [next((i for i, line in enumerate(lines) if line.startswith(step)), -1) for step in steps]
    assert -1 not in at and at == sorted(at), list(zip(steps, at))
    return at


def test_parity_says_each_step_before_its_result(tmp_path: Path) -> None:
    model = tiny_cnn(tmp_path / "model.onnx")
    data = make_idx_dir(tmp_path / "mnist")
    code, lines = in_terminal("parity", model, model, "--data-dir", data)
    assert code == 0
    lines = [line for line in lines if line.strip()]
    assert lines[0].startswith("loading the candidate model.onnx")  # the first word, before any model is loaded
    _before(lines, "loading the candidate", "loading the test images", "running the reference on",
            "running the candidate at batch 1", "running the candidate at batch 64", "onnx-onnx:", "PARITY PASS")


def test_piped_stderr_gets_no_status_lines(tmp_path: Path) -> None:
    model = tiny_cnn(tmp_path / "model.onnx")
    done = subprocess.run([sys.executable, "-m", "cnnkit", "parity", model, model, "--dataset", "none"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("note: ")], done.stderr


@pytest.mark.integration
def test_keras_loading_is_said_before_tensorflow_is_imported(trained_model: Path) -> None:
    """The library reports each step before it starts: "loading TensorFlow" while TensorFlow is not imported."""
    script = ("import sys\nfrom cnnkit.keras.build import load_keras_model\n"
              f"load_keras_model({str(trained_model)!r}, progress=lambda m: print(m, 'tensorflow' in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["loading TensorFlow False", "loading model.keras True"]


@pytest.mark.integration
def test_export_and_summary_of_a_keras_model_say_what_they_do(trained_model: Path, tmp_path: Path) -> None:
    code, lines = in_terminal("export", trained_model, "-o", tmp_path / "m.onnx")
    assert code == 0
    lines = [line for line in lines if line.strip()]
    assert lines[0] == "loading TensorFlow"
    _before(lines, "loading TensorFlow", "loading model.keras", "tracing the Keras model and converting it to ONNX",
            "checking the ONNX graph", "wrote ")
    code, lines = in_terminal("summary", trained_model)
    assert code == 0
    _before([line for line in lines if line.strip()], "loading TensorFlow", "loading model.keras", "total parameters")
