"""``cnnkit export`` and ``cnnkit parity`` through the CLI: exit codes, one-line errors, JSON."""

import json
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from tests.cli.test_cli_foundation import assert_user_error, run

pytestmark = pytest.mark.integration



def test_export_then_parity_pass(trained_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = run("export", trained_model, "-o", out)
    assert result.exit_code == 0, result.output
    assert "Keras 93,322, ONNX 93,322 (equal)" in result.stdout and "onnx.checker" in result.stdout
    report = tmp_path / "parity.json"
    result = run("parity", trained_model, out, "--dataset", "digits", "--samples", "50", "--json", report)
    assert result.exit_code == 0, result.output
    assert "PARITY PASS" in result.stdout and "float32 on both sides" in result.stdout
    data = json.loads(report.read_text())
    assert data["passed"] and data["provider"]["active"] == "CPUExecutionProvider"
    assert data["tolerance"]["atol"] == 1e-5 and data["batch_sizes"] == [1, 7, 64]
    assert data["environment"]["packages"]["cnnkit"]
    # The report is not overwritten without --force.
    assert_user_error(run("parity", trained_model, out, "--dataset", "digits", "--json", report), "already exists")


def test_parity_fail_exits_1_and_names_the_layer(trained_model: Path, exported_model: Path, tmp_path: Path) -> None:
    model = onnx.load(str(exported_model))
    init = next(i for i in model.graph.initializer if "/conv2_" in i.name and len(i.dims) == 4)
    w = numpy_helper.to_array(init).copy()
    w.flat[3] -= 0.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    result = run("parity", trained_model, bad, "--dataset", "digits", "--samples", "50", "--json", tmp_path / "p.json")
    assert result.exit_code == 1
    assert "PARITY FAIL" in result.stdout and "first divergent layer: conv2" in result.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["first_divergent_layer"] == "conv2" and not data["passed"]


def test_export_refuses_to_overwrite(trained_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_text("mine")
    assert_user_error(run("export", trained_model, "-o", out), "already exists", "--force")
    assert out.read_text() == "mine"


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda d: d / "missing.keras", ("missing.keras not found",)),
        (lambda d: (d / "bad.keras").write_bytes(b"junk") and d / "bad.keras", ("bad.keras is a text file, not a Keras 3 .keras model",)),
        (lambda d: (d / "bad.keras").write_bytes(b"PK\x03\x04junk") and d / "bad.keras", ("bad.keras is a damaged .keras file",)),
        (lambda d: (d / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n") and d / "model.h5", ("model.h5 is an HDF5 file", "not a Keras 3 .keras model")),
    ],
)
def test_export_bad_inputs(tmp_path: Path, make, fragments) -> None:
    src = make(tmp_path)
    assert_user_error(run("export", src, "-o", tmp_path / "o.onnx"), *fragments)
    assert not (tmp_path / "o.onnx").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_bad_opset(trained_model: Path, tmp_path: Path) -> None:
    assert_user_error(run("export", trained_model, "-o", tmp_path / "o.onnx", "--opset", "99"), "--opset 99")


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (("--batch-sizes", "0"), ("batch size must be positive, got 0",)),
        (("--batch-sizes", "1,x"), ("'x' is not a number",)),
        (("--provider", "warp"), ("unknown or uninstalled execution provider 'warp'",)),
        (("--samples", "-1"), ("--samples must be positive",)),
        (("--dataset", "cifar"), ("unknown dataset 'cifar'",)),
    ],
)
def test_parity_bad_options(trained_model: Path, exported_model: Path, extra, fragments) -> None:
    assert_user_error(run("parity", trained_model, exported_model, "--dataset", "digits", *extra), *fragments)


def test_parity_missing_and_corrupt_onnx(trained_model: Path, tmp_path: Path) -> None:
    assert_user_error(run("parity", trained_model, tmp_path / "none.onnx"), "none.onnx not found")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    assert_user_error(run("parity", trained_model, bad, "--dataset", "digits"), "bad.onnx is a text file, not an ONNX model")
    bad.write_bytes(bytes([0x08, 0xFF, 0xFF, 0x13, 0x00, 0x91]))  # binary, but no complete protobuf
    assert_user_error(run("parity", trained_model, bad, "--dataset", "digits"), "cannot read", "bad.onnx as ONNX")


def test_parity_cuda_without_cuda(trained_model: Path, exported_model: Path) -> None:
    import onnxruntime as ort

    from tests.runtimes.test_sessions import CUDA_LOADS

    if CUDA_LOADS:
        pytest.skip("CUDA loads here")
    result = run("parity", trained_model, exported_model, "--dataset", "digits", "--samples", "20", "--provider", "cuda")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert_user_error(result, "CUDAExecutionProvider was requested but the session runs on CPUExecutionProvider")
        fb = run("parity", trained_model, exported_model, "--dataset", "digits", "--samples", "20", "--provider", "cuda",
                 "--allow-fallback")
        assert fb.exit_code == 0 and "FALLBACK" in fb.stdout
    else:
        assert_user_error(result, "uninstalled")
