"""``cnnkit quantize`` through the CLI."""

import json
from pathlib import Path

import pytest

from tests.cli.test_cli_foundation import assert_user_error, run




@pytest.mark.integration
def test_quantize_static(exported_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    result = run("quantize", exported_model, "-o", out, "--dataset", "digits", "--max-accuracy-drop", "2",
                 "--json", tmp_path / "q.json")
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "smaller" in result.stdout and "parity vs FP32" in result.stdout
    data = json.loads((tmp_path / "q.json").read_text())
    assert data["schema"] == "cnnkit.quantize/1" and data["settings"]["mode"] == "static"
    assert_user_error(run("quantize", exported_model, "-o", out, "--dataset", "digits"), "already exists", "--force")


@pytest.mark.integration
def test_cannot_meet_exits_1(exported_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    result = run("quantize", exported_model, "-o", out, "--dataset", "digits", "--max-accuracy-drop", "-50",
                 "--max-attempts", "1")
    assert_user_error(result, "cannot meet the -50 pp accuracy budget", progress_ok=True)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--mode", "int4"), None),
        (("--calibration-samples", "0"), ("--calibration-samples must be positive",)),
        (("--dataset", "mnist"), ("was trained on digits (its metadata says so), not on --dataset mnist", "--data-dir")),
        (("--max-time", "0"), ("--max-time must be a positive number of seconds, got 0.0",)),
        (("--explain", "--auto"), ("--explain explains the nodes of one quantize run, not --auto's candidates",)),
    ],
)
def test_quantize_bad_options(exported_model: Path, tmp_path: Path, args, fragments) -> None:
    result = run("quantize", exported_model, "-o", tmp_path / "q.onnx", *args)
    if fragments is None:
        assert result.exit_code == 2  # not a valid choice: a usage error
    else:
        assert_user_error(result, *fragments)
    assert not (tmp_path / "q.onnx").exists()


def test_quantize_missing_model(tmp_path: Path) -> None:
    assert_user_error(run("quantize", tmp_path / "none.onnx", "-o", tmp_path / "q.onnx", "--dataset", "digits"), "not found")
