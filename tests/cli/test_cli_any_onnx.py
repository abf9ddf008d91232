"""Every command on ONNX classifiers as other exporters write them (NCHW, fixed batch, float16/uint8/int8
inputs), built with onnx.helper: exit 0 with figures a direct onnxruntime check confirms, or a one-line exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli_foundation import assert_user_error, run
from tests.onnx_graphs import reference_probs, tiny_classifier

# 28x28x1 so that the bundled digits dataset (and MNIST) fits them.
VARIANTS = [("NCHW", 1, "float32"), ("NCHW", 4, "float16"), ("NHWC", 2, "uint8"), ("NCHW", "N", "int8")]


def _model(tmp_path: Path, layout, batch, dtype) -> Path:
    return tiny_classifier(tmp_path / f"{layout}-{batch}-{dtype}.onnx", layout, batch, dtype, hw=28, channels=1, classes=10)


@pytest.mark.digits
@pytest.mark.parametrize(("layout", "batch", "dtype"), VARIANTS, ids=lambda v: str(v))
def test_every_command_on_an_onnx_classifier(tmp_path: Path, layout, batch, dtype) -> None:
    from cnnkit.data.datasets import load_dataset

    model = _model(tmp_path, layout, batch, dtype)
    fixed = batch if isinstance(batch, int) else None
    digits = load_dataset("digits", None, require_train=False)
    want = reference_probs(model, digits.x_test.astype(np.float32)).argmax(axis=1)

    # summary: layout, dtype, batch and MACs.
    r = run("summary", model, "--json", "-")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["image_input"]["layout"] == layout and s["image_input"]["dtype"] == dtype and s["image_input"]["batch"] == fixed
    assert s["total_macs"] == 28 * 28 * 8 * 9 + 14 * 14 * 8 * 72 + 14 * 14 * 8 * 10

    # bench: measured at the batch sizes the model takes, the others skipped with the reason.
    r = run("bench", model, "--batch-sizes", "1,2,4", "--warmup", "1", "--min-time", "0", "--min-iterations", "3",
            "--json", tmp_path / "bench.json")
    assert r.exit_code == 0, r.output
    bench = json.loads((tmp_path / "bench.json").read_text())
    measured = [c["batch_size"] for c in bench["cases"]]
    assert measured == ([fixed] if fixed else [1, 2, 4])
    assert [s["batch_size"] for s in bench["skipped"]] == [b for b in (1, 2, 4) if fixed and b != fixed]
    if fixed:
        assert "skipped:" in r.stdout and "--make-batch-dynamic" in r.stdout

    # eval: the accuracy onnxruntime gives when fed by hand.
    r = run("eval", model, "--dataset", "digits", "--json", tmp_path / "eval.json")
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["models"][0]["accuracy"] == pytest.approx(float(np.mean(want == digits.y_test)))

    # parity against a float32, dynamic-batch, NHWC twin with the same weights (int8 input means pixel - 128).
    twin = tiny_classifier(tmp_path / "twin.onnx", "NHWC", "N", "float32", hw=28, channels=1, classes=10)
    r = run("parity", twin, model, "--dataset", "digits", "--json", tmp_path / "parity.json")
    p = json.loads((tmp_path / "parity.json").read_text())
    assert p["batch_sizes"] == ([fixed] if fixed else [1, 7, 64])
    if dtype == "int8":
        assert r.exit_code == 1 and not p["passed"]  # fed pixel - 128, a different input: a real FAIL
    else:
        assert r.exit_code == 0 and p["passed"], r.output

    # quantize fp16 (and static INT8 for the float32 one), checked and timed at the model's own batch.
    r = run("quantize", model, "-o", tmp_path / "fp16.onnx", "--mode", "fp16", "--dataset", "digits",
            "--max-accuracy-drop", "100", "--json", tmp_path / "q.json")
    assert r.exit_code == 0, r.output
    q = json.loads((tmp_path / "q.json").read_text())
    assert list(q["speed"]["fp32_p50_ms"]) == ([str(fixed)] if fixed else ["1", "64"])
    assert q["top1_agreement"] > 0.9

    # featuremaps: the image read as (H, W, C) = 28x28x1 whatever the layout.
    from PIL import Image

    Image.fromarray(digits.x_test[0, :, :, 0]).save(tmp_path / "digit.png")
    r = run("featuremaps", model, "--image", tmp_path / "digit.png", "-o", tmp_path / "maps")
    assert r.exit_code == 0, r.output
    fm = json.loads((tmp_path / "maps" / "featuremaps.json").read_text())
    assert [x["shape"] for x in fm["layers"]] == [[8, 28, 28], [8, 14, 14]]
    assert fm["predicted"] == int(want[0])


@pytest.mark.digits
def test_static_quantization_of_a_fixed_batch_nchw_model(tmp_path: Path) -> None:
    model = _model(tmp_path, "NCHW", 1, "float32")
    r = run("quantize", model, "-o", tmp_path / "int8.onnx", "--dataset", "digits", "--calibration-samples", "20",
            "--max-accuracy-drop", "100", "--max-attempts", "0", "--json", tmp_path / "q.json", "--keep-failed")
    # A random-weight model's near-ties flip in INT8, so parity's 0.99 top-1 agreement may fail it: kept to be checked.
    passed = json.loads((tmp_path / "q.json").read_text())["passed"]
    assert r.exit_code == (0 if passed else 1), r.output
    from cnnkit.graph.info import describe_onnx

    info = describe_onnx(tmp_path / "int8.onnx")
    assert info.precision == "int8-static" and info.input.batch == 1 and info.layout == "NCHW"


def test_bench_refuses_only_batch_sizes_a_fixed_model_cannot_take(tmp_path: Path) -> None:
    model = _model(tmp_path, "NCHW", 1, "float32")
    assert_user_error(run("bench", model, "--batch-sizes", "8,16"), "nothing to measure", "fixed batch of 1",
                      "--make-batch-dynamic")
    r = run("bench", model, "--warmup", "1", "--min-time", "0", "--min-iterations", "2", "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    b = json.loads((tmp_path / "b.json").read_text())
    assert [c["batch_size"] for c in b["cases"]] == [1] and len(b["skipped"]) == 5
    assert b["config"]["fitted_defaults"]["applied"] == ["batch_sizes"] and "chosen for the model" in r.stdout


def test_make_batch_dynamic_cli(tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "fixed.onnx", "NCHW", 1, "float32", reshape_batch=True)
    r = run("export", "--make-batch-dynamic", model, "-o", tmp_path / "dyn.onnx")
    assert r.exit_code == 0, r.output
    assert "batch 1 -> dynamic" in r.stdout and "flatten" in r.stdout
    r = run("bench", tmp_path / "dyn.onnx", "--batch-sizes", "1,3", "--warmup", "0", "--min-time", "0", "--min-iterations", "2")
    assert r.exit_code == 0 and "skipped" not in r.stdout, r.output
    assert_user_error(run("export", "--make-batch-dynamic", tmp_path / "dyn.onnx", "-o", tmp_path / "x.onnx"), "already dynamic")


@pytest.mark.parametrize("ir_version", [9, 3])
def test_make_batch_dynamic_cli_on_a_computed_same_padding(tmp_path: Path, ir_version: int) -> None:
    """The TorchScript EfficientNet case: pads computed at run time, a Reshape to [1, -1] after them; and at IR 3."""
    from tests.onnx_graphs import same_padding_classifier

    model = same_padding_classifier(tmp_path / "same.onnx", hw=28, channels=1, classes=10, ir_version=ir_version)
    r = run("export", "--make-batch-dynamic", model, "-o", tmp_path / "dyn.onnx")
    assert r.exit_code == 0, r.output
    assert "batch 1 -> dynamic" in r.stdout and "/Reshape" in r.stdout
    r = run("bench", tmp_path / "dyn.onnx", "--batch-sizes", "1,3", "--warmup", "0", "--min-time", "0",
            "--min-iterations", "2")
    assert r.exit_code == 0 and "skipped" not in r.stdout, r.output


def test_onnx_summary_text(tmp_path: Path) -> None:
    model = _model(tmp_path, "NHWC", "N", "uint8")
    r = run("summary", model)
    assert r.exit_code == 0, r.output
    for fragment in ("opset 17", "producer onnx.helper", "uint8", "NHWC", "dynamic batch", "conv1", "MACs per image",
                     "ops: "):
        assert fragment in r.stdout
    assert_user_error(run("summary", tmp_path / "missing.onnx"), "not found")


def test_summary_and_bench_see_through_a_computed_same_padding(tmp_path: Path) -> None:
    """A TorchScript-style export whose pads are computed at run time: summary counts its MACs from the folded
    graph and says so; bench fits its defaults to those MACs; a model whose shapes stay unknown says "unknown"."""
    from tests.onnx_graphs import same_padding_classifier

    model = same_padding_classifier(tmp_path / "same.onnx", hw=28, channels=1, classes=10)
    macs = 8 * 14 * 14 * 9 + 8 * 14 * 14 * 10
    r = run("summary", model)
    assert r.exit_code == 0, r.output
    assert f"MACs per image ({macs:,})" in r.stdout and "constant-folding" in r.stdout and "unknown" not in r.stdout
    r = run("summary", model, "--json", "-")
    s = json.loads(r.stdout)
    assert (s["total_macs"], s["unknown_macs"]) == (macs, 0) and s["shapes_folded"] > 0
    r = run("bench", model, "--warmup", "1", "--min-time", "0", "--min-iterations", "2", "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    fitted = json.loads((tmp_path / "b.json").read_text())["config"]["fitted_defaults"]
    assert fitted["macs_per_image"] == macs and "MACs unknown" not in fitted["reason"]

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Mystery", ["x"], ["m"], domain="com.example", name="mystery"),
             helper.make_node("Conv", ["m", "w"], ["y"], name="conv")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")])
    onnx.save(helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17),
                                                                     helper.make_opsetid("com.example", 1)]),
              tmp_path / "custom.onnx")
    r = run("summary", tmp_path / "custom.onnx")
    assert r.exit_code == 0, r.output
    assert "MACs unknown (1 layer(s) with unknown shapes)" in r.stdout and "0 MACs" not in r.stdout


@pytest.mark.parametrize("name", ["conv1d", "two_inputs", "dynamic_hw", "int64_input", "batch_zero", "segmentation",
                                  "dense_nhwc"])
@pytest.mark.digits
def test_no_model_shape_ends_in_exit_3(tmp_path: Path, name: str) -> None:
    from PIL import Image

    from tests.onnx_graphs import odd_models

    model = odd_models(tmp_path / "odd")[name]
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "d.png")
    refused = {"conv1d": "not an image tensor", "two_inputs": "a [1, 1, 28, 28] float32, b [1, 1, 28, 28] float32",
               "dynamic_hw": "no fixed height and width", "int64_input": "dtype int64", "batch_zero": "batch of 0"}
    commands = [("bench", model, "--batch-sizes", "1,2", "--warmup", "0", "--min-time", "0", "--min-iterations", "2"),
                ("eval", model, "--dataset", "digits", "--limit", "20"),
                ("parity", model, model, "--dataset", "digits", "--samples", "8"),
                ("featuremaps", model, "--image", tmp_path / "d.png", "-o", tmp_path / "maps", "--force"),
                ("predict", model, tmp_path / "d.png")]
    for args in commands:
        r = run(*args)
        assert r.exit_code in (0, 1), (args, r.output)
        if r.exit_code == 1:
            assert_user_error(r, progress_ok=True)  # a preprocessing note may come first
        if name in refused and not (args[0] == "parity" and name == "conv1d"):  # parity also runs signal models
            assert_user_error(r, refused[name], progress_ok=True)
    assert run("summary", model).exit_code == 0  # summary describes what it can, refusals included


@pytest.mark.digits
def test_openvino_runs_a_fixed_batch_model_a_batch_at_a_time(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    model = _model(tmp_path, "NCHW", 4, "float32")
    r = run("eval", model, "--runtime", "openvino", "--dataset", "digits", "--limit", "30", "--json", tmp_path / "ov.json")
    assert r.exit_code == 0, r.output
    r = run("eval", model, "--dataset", "digits", "--limit", "30", "--json", tmp_path / "ort.json")
    assert r.exit_code == 0, r.output
    ov, ort_ = (json.loads((tmp_path / f).read_text())["models"][0]["accuracy"] for f in ("ov.json", "ort.json"))
    assert ov == ort_
