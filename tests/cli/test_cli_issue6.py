"""compare, report, featuremaps and pipeline through the CLI: exit codes and one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli_foundation import assert_user_error, run
from tests.results.test_compare import _bench




def test_compare_exit_codes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = _bench(tmp_path / "a.json", {1: rng.normal(1.0, 0.01, 200)})
    slow = _bench(tmp_path / "b.json", {1: rng.normal(1.5, 0.01, 200)})
    same = _bench(tmp_path / "c.json", {1: rng.normal(1.0, 0.01, 200)})
    r = run("compare", base, slow, "--json", tmp_path / "cmp.json")
    assert r.exit_code == 1 and "REGRESSION" in r.stdout and "regression" in r.stdout
    assert json.loads((tmp_path / "cmp.json").read_text())["regressed"] is True
    assert run("compare", base, same).exit_code == 0
    assert run("compare", base, slow, "--max-latency-regression", "60%").exit_code == 0


def test_compare_bad_inputs(tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text(json.dumps({"schema": "cnnkit.bench/2"}))
    assert_user_error(run("compare", f, f), "is not a cnnkit benchmark, eval, fleet benchmark or LoadGen scenario result (schema 'cnnkit.bench/2'")
    assert_user_error(run("compare", tmp_path / "none.json", f), "cannot read")
    good = _bench(tmp_path / "a.json", {1: np.ones(3)})
    assert_user_error(run("compare", good, good, "--max-latency-regression", "lots"), "'lots' is not a number")


def test_report_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_user_error(run("report", tmp_path / "empty", "-o", tmp_path / "r"), "holds no cnnkit results")
    f = tmp_path / "other.json"
    f.write_text(json.dumps({"version": 1}))
    assert_user_error(run("report", f, "-o", tmp_path / "r"), "not a cnnkit result")
    assert not (tmp_path / "r").exists()


@pytest.mark.integration
def test_featuremaps_cli(exported_model: Path, tmp_path: Path) -> None:
    from PIL import Image

    r = run("featuremaps", exported_model, "--dataset", "digits", "--index", "0", "-o", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert "conv1: 32x26x26" in r.stdout and (tmp_path / "m" / "01-conv1.png").is_file()
    Image.new("RGB", (20, 20), (200, 10, 10)).save(tmp_path / "small.png")  # resized and made grey by the record
    r = run("featuremaps", exported_model, "--image", tmp_path / "small.png", "-o", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "s" / "featuremaps.json").read_text())["preprocess"]["size"] == [28, 28]
    (tmp_path / "junk.png").write_text("no image")
    assert_user_error(run("featuremaps", exported_model, "--image", tmp_path / "junk.png", "-o", tmp_path / "n"),
                      "junk.png cannot be read")
    assert_user_error(run("featuremaps", exported_model, "-o", tmp_path / "n"), "give exactly one input")
    assert not (tmp_path / "n").exists()


def test_pipeline_bad_inputs(tmp_path: Path) -> None:
    assert_user_error(run("pipeline", "--spec", "nope", "--out", tmp_path / "r"), "unknown spec 'nope'")
    assert_user_error(run("pipeline", "--batch-sizes", "0", "--out", tmp_path / "r"), "batch size must be positive")
    assert_user_error(run("pipeline", "--epochs", "0", "--out", tmp_path / "r"), "--epochs must be positive")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.keras").write_text("my own model")
    assert_user_error(run("pipeline", "--dataset", "digits", "--out", mine), "holds files but no cnnkit run", "--force")
    assert (mine / "model.keras").read_text() == "my own model"


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--dataset", "digits", "--epochs", "1", "--out", "{file}"),
        ("pipeline", "--dataset", "digits", "--out", "{file}"),
        ("report", "{bench}", "-o", "{file}"),
        ("featuremaps", "{onnx}", "--dataset", "digits", "--index", "0", "-o", "{file}"),
    ],
    ids=["train", "pipeline", "report", "featuremaps"],
)
def test_output_folder_that_is_a_file(tmp_path: Path, args, exported_model: Path) -> None:
    target = tmp_path / "afile"
    target.write_text("mine")
    bench = _bench(tmp_path / "b.json", {1: np.ones(3)})
    filled = [a.format(file=target, bench=bench, onnx=exported_model) for a in args]
    assert_user_error(run(*filled), f"{target} is a file, expected a folder")
    assert target.read_text() == "mine"
