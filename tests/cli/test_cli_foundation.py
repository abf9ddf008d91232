"""The CLI through Typer's CliRunner: exit codes and one-line messages."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnkit.cli.app import app
from tests.conftest import make_idx_dir

runner = CliRunner()


def run(*args):
    """Invoke the CLI in-process; arguments may be paths."""
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, *fragments: str, progress_ok: bool = False) -> None:
    """Exit 1, one error line (the last on stderr; progress lines before it only with ``progress_ok``)."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 or (progress_ok and lines), result.stderr
    assert lines[-1].startswith("cnnkit: error: ")
    assert sum(line.startswith("cnnkit: error: ") for line in lines) == 1
    for fragment in fragments:
        assert fragment in lines[-1]
    assert "Traceback" not in result.output


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import cnnkit.cli.app; "
        "assert not {'tensorflow', 'onnxruntime', 'keras', 'tf2onnx', 'sklearn', 'openvino', 'ai_edge_litert', 'ray', 'mlperf_loadgen'} & set(sys.modules), sys.modules.keys(); "
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 1.0
    assert run("--help").exit_code == 0


def test_python_dash_m_works() -> None:
    out = subprocess.run([sys.executable, "-m", "cnnkit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("cnnkit ")


def test_summary_prints_the_lecture_table() -> None:
    result = run("summary", "mnist-cnn")
    assert result.exit_code == 0
    for cell in ("26×26×32", "320", "13×13×32", "11×11×64", "18,496", "5×5×64", "3×3×64", "36,928", "93,322",
                 "18×18", "324 px 41.3 %"):
        assert cell in result.stdout


def test_summary_json() -> None:
    data = json.loads(run("summary", "mnist-cnn-70", "--json", "-").stdout)
    assert data["total_params"] == 96_844
    assert [layer["name"] for layer in data["layers"]][:2] == ["rescale", "conv1"]


def test_usage_error_exits_2() -> None:
    assert run("train", "--bogus").exit_code == 2
    assert run("train", "--optimizer", "lbfgs").exit_code == 2


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("summary", "nope"), ("unknown spec 'nope'", "hint:")),
        (("summary", "missing.keras"), ("missing.keras not found",)),
        (("train", "--spec", "nope"), ("unknown spec",)),
        (("train", "--dataset", "cifar"), ("unknown dataset 'cifar'",)),
        (("train", "--dataset", "fashion_mnist"), ("cannot load fashion_mnist", "--data-dir")),
        (("train", "--epochs", "0"), ("--epochs must be positive, got 0",)),
        (("train", "--batch-size", "-3"), ("--batch-size must be positive, got -3",)),
        (("train", "--data-dir", "/nonexistent/dir"), ("/nonexistent/dir does not exist",)),
    ],
)
def test_user_errors_are_one_line(args: tuple[str, ...], fragments: tuple[str, ...]) -> None:
    assert_user_error(run(*args), *fragments)


def test_corrupt_keras_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    assert_user_error(run("summary", str(bad)), "bad.keras is a text file, not a Keras 3 .keras model")
    bad.write_bytes(b"PK\x03\x04 cut short")  # a zip archive's start, and no more
    assert_user_error(run("summary", str(bad)), "bad.keras is a damaged .keras file (not a complete zip archive)")


def test_bad_data_file_names_the_file(tmp_path: Path) -> None:
    folder = make_idx_dir(tmp_path / "d")
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    assert_user_error(run("train", "--data-dir", str(folder), "--out", str(tmp_path / "o")), "t10k-images-idx3-ubyte.gz")
    assert not (tmp_path / "o").exists()


def test_debug_shows_the_traceback() -> None:
    result = runner.invoke(app, ["--debug", "summary", "nope"])
    assert result.exit_code == 1 and "Traceback" in result.stderr


@pytest.mark.integration
def test_train_command_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ("train", "--dataset", "digits", "--epochs", "1", "--limit-train", "200", "--limit-test", "50", "--out", str(out))
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.stdout and "93,322" in result.stdout
    assert (out / "model.keras").is_file()
    assert_user_error(run(*args), "model.keras already exists", "--force")
    assert run(*args, "--force").exit_code == 0
    summary = run("summary", str(out / "model.keras"))
    assert summary.exit_code == 0 and "93,322" in summary.stdout


@pytest.mark.integration
def test_default_dataset_notice(tmp_path: Path) -> None:
    result = run("train", "--epochs", "1", "--limit-train", "100", "--limit-test", "20", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "full MNIST cannot be had" in result.stderr and "MNIST test digits shipped with cnnkit" in result.stderr


def test_a_bug_is_one_line_and_exit_3_with_traceback_only_on_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnkit.keras.spec

    def broken(_name: str) -> None:
        raise ZeroDivisionError("a bug in cnnkit")

    monkeypatch.setattr(cnnkit.keras.spec, "load_spec", broken)
    result = run("summary", "mnist-cnn")
    assert result.exit_code == 3
    assert result.stderr.strip() == ("cnnkit: internal error: ZeroDivisionError: a bug in cnnkit "
                                     "(run with --debug for the traceback, and please report it)")
    debug = run("--debug", "summary", "mnist-cnn")
    assert debug.exit_code == 3 and "Traceback" in debug.stderr
