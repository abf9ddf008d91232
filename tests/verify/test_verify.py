"""Golden bundles and verify on small onnx.helper models: a pass, the variant gate, planted faults that must fail
and name what diverged, and bad bundles refused in one line."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnkit.cli.app import app
from cnnkit.verify.bundle import BundleConfig, BundleError, build_bundle, manifest_digest, open_bundle
from cnnkit.verify.check import VerifyConfig, verify_bundle
from tests.imaging import write_digit_folder
from tests.onnx_graphs import tiny_classifier

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("cnnkit: error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny grey 28x28 classifier, a folder of real digits, and its bundle (the model as its own reference)."""
    root = tmp_path_factory.mktemp("verify")
    model = tiny_classifier(root / "model.onnx", batch="batch", hw=28, channels=1, classes=10, seed=3)
    data = root / "digits"
    write_digit_folder(data, n=40)
    bundle = root / "model.cnnkit"
    build_bundle(BundleConfig(model=model, output=bundle, data_dir=data, samples=32))
    return {"root": root, "model": model, "data": data, "bundle": bundle}


def _edit_onnx(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001
    import onnx

    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def _rezip(src: Path, dst: Path, change) -> Path:  # noqa: ANN001
    """A copy of the bundle with ``change(name, data) -> (name, data) | None`` applied to each member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            out = change(info.filename, zin.read(info))
            if out is not None:
                zout.writestr(out[0], out[1])
    return dst


# --- the bundle ----------------------------------------------------------------------------------


def test_bundle_holds_model_golden_data_gates_and_hashes(made: dict[str, Path]) -> None:
    with zipfile.ZipFile(made["bundle"]) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        names = set(zf.namelist())
    assert manifest["schema"] == "cnnkit.bundle/1"
    assert {"model.onnx", "golden/pixels.npy", "golden/inputs.npy", "golden/labels.npy", "golden/output-0.npy"} <= names
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["inputs"]["counts"] == {"dataset": 32, "random": 16, "zeros": 2, "full-255": 2, "noise": 8}
    assert manifest["inputs"]["labelled"] == 32
    assert manifest["input"]["height"] == 28 and manifest["input"]["channels"] == 1
    assert manifest["gate"]["atol"] >= 1e-5 and manifest["gate"]["min_top1_agreement"] == 1.0
    assert manifest["variant_gate"]["atol"] is None and manifest["variant_gate"]["min_top1_agreement"] == 0.99
    assert manifest["reference"]["same_as_model"] is True
    assert manifest["environment"]["packages"]["onnxruntime"] or manifest["environment"]["packages"]["onnxruntime-gpu"]
    assert manifest["content_sha256"] == manifest_digest(manifest)
    with open_bundle(made["bundle"]) as b:
        assert b.pixels.dtype == np.uint8 and b.pixels.shape == (60, 28, 28, 1)
        assert b.inputs.shape == (60, 1, 28, 28)  # as the NCHW model takes them
        assert np.array_equal(b.labels[:32] >= 0, np.ones(32, bool)) and (b.labels[32:] == -1).all()
        assert b.model_path.read_bytes() == made["model"].read_bytes()
        folder = b.model_path.parent
    assert not folder.exists()  # the temporary folder goes with the block


def test_bundle_refuses_to_overwrite_and_a_reference_of_another_shape(made: dict[str, Path], tmp_path: Path) -> None:
    one_error_line(run("bundle", made["model"], "--data-dir", made["data"], "-o", made["bundle"]), "exists")
    other = tiny_classifier(tmp_path / "other.onnx", batch="batch", hw=32, channels=1, classes=10)
    one_error_line(run("bundle", made["model"], "--reference", other, "--data-dir", made["data"], "-o",
                       tmp_path / "x.cnnkit"), "32x32x1", "not the same model")
    assert not (tmp_path / "x.cnnkit").exists()


def test_bundle_refuses_a_model_that_fails_against_its_reference(made: dict[str, Path], tmp_path: Path) -> None:
    wrong = tiny_classifier(tmp_path / "wrong.onnx", batch="batch", hw=28, channels=1, classes=10, seed=4)
    line = one_error_line(run("bundle", wrong, "--reference", made["model"], "--data-dir", made["data"], "-o",
                              tmp_path / "w.cnnkit"), "fails its own gate")
    assert "cnnkit parity" in line
    assert not (tmp_path / "w.cnnkit").exists()


# --- verify: passes ------------------------------------------------------------------------------


def test_verify_passes_on_the_bundled_model_and_writes_the_device_fingerprint(made: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "verify.json"
    result = run("verify", made["bundle"], "--json", out)
    assert result.exit_code == 0, result.output
    assert "VERIFY PASS" in result.stdout
    data = json.loads(out.read_text())
    assert data["schema"] == "cnnkit.verify/1" and data["passed"] is True
    assert data["gate_kind"] == "same-model" and data["model"]["same_as_bundle"] is True
    assert data["inputs"]["max_input_diff"] == 0.0
    assert data["environment"]["cpu"]["model"] and data["provider"]["active"] == "CPUExecutionProvider"
    assert [o["batch_size"] for o in data["outputs"]] == [1, 7, 64]
    from cnnkit.results.load import load_result

    assert load_result(out, expect="cnnkit.verify/1").passed


def test_an_fp16_variant_passes_the_variant_gate(made: dict[str, Path], tmp_path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp16 = tmp_path / "model.fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(made["model"])), keep_io_types=True), str(fp16))
    result = verify_bundle(VerifyConfig(bundle=made["bundle"], model=fp16))
    assert result.passed, result.failures
    assert result.gate_kind == "variant" and result.model["precision"] == "fp16"
    assert result.tolerance.atol is None and result.tolerance.min_top1_agreement == 0.99
    assert max(d.max_abs for d in result.outputs) > 0  # it is not the float32 model


def test_a_float32_copy_of_the_model_is_held_to_the_same_model_gate(made: dict[str, Path], tmp_path: Path) -> None:
    copy = _edit_onnx(made["model"], tmp_path / "copy.onnx", lambda m: setattr(m, "producer_name", "a copy"))
    result = verify_bundle(VerifyConfig(bundle=made["bundle"], model=copy))
    assert result.passed and result.gate_kind == "same-model" and result.tolerance.atol is not None
    assert result.model["same_as_bundle"] is False


# --- verify: planted faults ----------------------------------------------------------------------


def test_one_weight_changed_fails_and_names_the_weight(made: dict[str, Path], tmp_path: Path) -> None:
    from onnx import numpy_helper

    def bump(model) -> None:  # noqa: ANN001
        for i, t in enumerate(model.graph.initializer):
            if t.name == "w1":
                w = numpy_helper.to_array(t).copy()
                w.flat[5] += 0.05
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, "w1"))

    changed = _edit_onnx(made["model"], tmp_path / "changed.onnx", bump)
    result = run("verify", made["bundle"], "--model", changed)
    assert result.exit_code == 1, result.output
    assert "VERIFY FAIL" in result.stdout
    assert "exceeds atol" in result.stderr
    assert "weight w1: 1 of 72 value(s) differ from the bundled model's" in result.stderr


def test_a_wrong_preprocessing_override_fails_and_says_so(made: dict[str, Path]) -> None:
    result = verify_bundle(VerifyConfig(bundle=made["bundle"], preprocess=_choice("unit")))
    assert not result.passed
    assert result.failures[0].startswith("preprocessing differs from the bundle's: the input tensors differ")
    assert "preprocessing: the inputs already differ before the model runs" in result.diagnosis
    # the bundle's own record, given explicitly, is no override at all
    same = verify_bundle(VerifyConfig(bundle=made["bundle"], preprocess=_choice("raw")))
    assert same.passed, same.failures


def _choice(preset: str):  # noqa: ANN202
    from cnnkit.data.preprocess import PreprocessChoice

    return PreprocessChoice(preset=preset)


def test_an_fp16_variant_beyond_tolerance_fails_the_variant_gate(made: dict[str, Path], tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper
    from onnxruntime.transformers.float16 import convert_float_to_float16

    def scramble(model) -> None:  # noqa: ANN001 (a broken conversion: the dense weights' classes shuffled)
        for i, t in enumerate(model.graph.initializer):
            if t.name == "wd":
                w = numpy_helper.to_array(t)
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(w[:, ::-1].copy(), "wd"))

    broken = _edit_onnx(made["model"], tmp_path / "broken.onnx", scramble)
    fp16 = tmp_path / "broken.fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(broken)), keep_io_types=True), str(fp16))
    result = verify_bundle(VerifyConfig(bundle=made["bundle"], model=fp16))
    assert not result.passed and result.gate_kind == "variant"
    assert any("top-1 agreement" in f and "< 0.99" in f for f in result.failures), result.failures
    assert any(d.startswith("weight wd:") and "(beyond float16 rounding)" in d for d in result.diagnosis), result.diagnosis
    marked = onnx.load(str(fp16))  # as quantize --keep-failed writes a variant that failed its gate
    onnx.helper.set_model_props(marked, {"cnnkit_gate": "failed"})
    onnx.save(marked, str(fp16))
    again = verify_bundle(VerifyConfig(bundle=made["bundle"], model=fp16))
    assert again.diagnosis[0] == ("broken.fp16.onnx's metadata says cnnkit_gate=failed: cnnkit quantize wrote it only "
                                  "because of --keep-failed")
    # a tighter gate given on the command line fails the good FP16 variant too
    good = tmp_path / "good.fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(made["model"])), keep_io_types=True), str(good))
    tight = verify_bundle(VerifyConfig(bundle=made["bundle"], model=good, atol=1e-9))
    assert not tight.passed and "exceeds atol 1e-09" in tight.failures[0]
    assert tight.diagnosis == ()  # its weights are the bundled ones rounded to float16: nothing beyond that


def test_a_runtime_returning_nan_fails_and_names_the_node(made: dict[str, Path], tmp_path: Path) -> None:
    from onnx import helper, numpy_helper

    def nan_for_dark_images(model) -> None:  # noqa: ANN001 (Sqrt of the features minus 0.5: NaN where one is small)
        g = model.graph
        at = next(i for i, node in enumerate(g.node) if node.op_type == "Flatten")
        g.node[at].output[0] = "flat_raw"
        g.initializer.append(numpy_helper.from_array(np.array(-0.5, np.float32), "shift"))
        g.node.insert(at + 1, helper.make_node("Add", ["flat_raw", "shift"], ["shifted"], name="shift"))
        g.node.insert(at + 2, helper.make_node("Sqrt", ["shifted"], ["flat"], name="sqrt_features"))

    nan_model = _edit_onnx(made["model"], tmp_path / "nan.onnx", nan_for_dark_images)
    result = verify_bundle(VerifyConfig(bundle=made["bundle"], model=nan_model))
    assert not result.passed
    assert any("the candidate gives" in f and "NaN" in f for f in result.failures), result.failures
    assert any("node sqrt_features (Sqrt) is the first to give NaN/Inf" in d for d in result.diagnosis), result.diagnosis


def test_a_model_that_does_not_match_the_input_contract_is_one_line(made: dict[str, Path], tmp_path: Path) -> None:
    other = tiny_classifier(tmp_path / "rgb.onnx", batch="batch", hw=28, channels=3, classes=10)
    one_error_line(run("verify", made["bundle"], "--model", other), "28x28x3", "28x28x1", "input contract")


# --- bad bundles ---------------------------------------------------------------------------------


def test_a_truncated_bundle_is_one_line(made: dict[str, Path], tmp_path: Path) -> None:
    data = made["bundle"].read_bytes()
    cut = tmp_path / "cut.cnnkit"
    cut.write_bytes(data[: len(data) // 2])
    one_error_line(run("verify", cut), "not a complete cnnkit bundle", str(cut))


def test_an_edited_member_fails_its_hash(made: dict[str, Path], tmp_path: Path) -> None:
    def edit(name: str, data: bytes):  # noqa: ANN202
        if name == "golden/output-0.npy":
            arr = np.load(io.BytesIO(data))
            arr[0, 0] += 0.25
            buf = io.BytesIO()
            np.save(buf, arr)
            data = buf.getvalue()
        return name, data

    edited = _rezip(made["bundle"], tmp_path / "edited.cnnkit", edit)
    one_error_line(run("verify", edited), "golden/output-0.npy does not match its SHA-256")


def test_an_edited_manifest_fails_its_own_hash(made: dict[str, Path], tmp_path: Path) -> None:
    def loosen(name: str, data: bytes):  # noqa: ANN202
        if name == "manifest.json":
            m = json.loads(data)
            m["gate"]["atol"] = 1.0
            data = json.dumps(m).encode()
        return name, data

    one_error_line(run("verify", _rezip(made["bundle"], tmp_path / "loose.cnnkit", loosen)),
                   "does not match its own hash")


def test_a_newer_schema_is_refused(made: dict[str, Path], tmp_path: Path) -> None:
    def newer(name: str, data: bytes):  # noqa: ANN202
        if name == "manifest.json":
            m = json.loads(data)
            m["schema"] = "cnnkit.bundle/2"
            m["content_sha256"] = manifest_digest(m)
            data = json.dumps(m).encode()
        return name, data

    one_error_line(run("verify", _rezip(made["bundle"], tmp_path / "v2.cnnkit", newer)),
                   "version 2 bundle", "reads version 1", "upgrade cnnkit")


@pytest.mark.parametrize("name", ["../evil.onnx", "/abs/model.onnx", "golden/../../x.npy", "model.onnx.extra"])
def test_a_member_outside_the_layout_is_refused_before_anything_is_written(made: dict[str, Path], tmp_path: Path,
                                                                           name: str) -> None:
    def add(member: str, data: bytes):  # noqa: ANN202
        return member, data

    bad = _rezip(made["bundle"], tmp_path / "slip.cnnkit", add)
    with zipfile.ZipFile(bad, "a") as zf:
        zf.writestr(name, b"payload")
    with pytest.raises(BundleError, match="which no cnnkit bundle holds"):
        with open_bundle(bad):
            pass
    assert not (tmp_path / "evil.onnx").exists() and not Path("/abs/model.onnx").exists()


def test_a_missing_member_is_refused(made: dict[str, Path], tmp_path: Path) -> None:
    def drop(name: str, data: bytes):  # noqa: ANN202
        return None if name == "golden/labels.npy" else (name, data)

    one_error_line(run("verify", _rezip(made["bundle"], tmp_path / "short.cnnkit", drop)),
                   "lacks golden/labels.npy")


def test_not_a_bundle_and_no_tflite_are_one_line(made: dict[str, Path], tmp_path: Path) -> None:
    one_error_line(run("verify", made["model"]), "not a complete cnnkit bundle")
    one_error_line(run("verify", tmp_path / "nope.cnnkit"), "no such bundle")
    pytest.importorskip("ai_edge_litert")
    one_error_line(run("verify", made["bundle"], "--runtime", "litert"), "holds no .tflite")


def test_verify_on_openvino_passes_and_names_what_ran(made: dict[str, Path]) -> None:
    pytest.importorskip("openvino")
    from cnnkit.runtimes.registry import RuntimeChoice

    result = verify_bundle(VerifyConfig(bundle=made["bundle"], runtime=RuntimeChoice("openvino", "fp32")))
    assert result.passed, result.failures
    assert result.provider["active"] == "OpenVINO CPU" and result.provider["version"]
    assert result.runtime["label"] == "openvino" and result.gate_kind == "same-model"


def test_a_member_twice_is_refused(made: dict[str, Path], tmp_path: Path) -> None:
    bad = _rezip(made["bundle"], tmp_path / "twice.cnnkit", lambda name, data: (name, data))
    with zipfile.ZipFile(bad, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("model.onnx", b"another model")
    one_error_line(run("verify", bad), "model.onnx more than once")


def test_a_bundle_without_a_dataset_holds_the_synthetic_inputs_only(made: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "synthetic.cnnkit"
    r = run("bundle", made["model"], "--dataset", "none", "-o", out)
    assert r.exit_code == 0, r.output
    with open_bundle(out) as b:
        assert b.manifest.inputs["counts"] == {"random": 16, "zeros": 2, "full-255": 2, "noise": 8}
        assert b.manifest.inputs["labelled"] == 0
    assert verify_bundle(VerifyConfig(bundle=out)).passed


def test_an_unknown_engine_is_the_one_engine_error(made: dict[str, Path]) -> None:
    one_error_line(run("verify", made["bundle"], "--engine", "spark"), "unknown --engine 'spark'", "one of: local, ray")
