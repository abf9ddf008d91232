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


def test_quantize_says_how_the_int8_graph_runs_and_why_it_is_slower(tmp_path: Path) -> None:
    from tests.imaging import write_digit_folder
    from tests.onnx_graphs import float_ops_between_convs

    model = float_ops_between_convs(tmp_path / "sin.onnx")
    write_digit_folder(tmp_path / "rgb", n=40, size=32, rgb=True, labelled=False)
    out, report = tmp_path / "q.onnx", tmp_path / "q.json"
    result = run("quantize", model, "-o", out, "--data-dir", tmp_path / "rgb", "--preprocess", "unit",
                 "--calibration-samples", "20", "--max-accuracy-drop", "100", "--json", report)
    assert result.exit_code == 0, result.output
    slowdown = json.loads(report.read_text())["slowdown"]
    assert slowdown["variant"]["float_ops"] == {"Sin": 1, "Erf": 1} and slowdown["variant"]["boundary"] == 2
    assert slowdown["variant_us_by_type"] and slowdown["fp32_us_by_type"] and slowdown["profile_batch"] == 1
    text = " ".join(result.output.split())
    assert f"as ONNX Runtime runs it: {slowdown['variant']['nodes']} nodes" in text
    if json.loads(report.read_text())["speed_warning"]:  # slower here: it says why, naming the float ops
        assert "why: 2 node(s) have no integer kernel" in text and "Sin x1" in text and "what would help:" in text
