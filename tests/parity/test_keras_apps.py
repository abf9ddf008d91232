"""Parity on models shaped like users' own: a keras.applications network (BatchNorm calibrated on real
images), nested and shared layers, BN-fused convolutions, and models whose outputs do not depend on the input."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from cnnkit.export.onnx import ExportConfig, export_onnx
from cnnkit.parity.check import ParityConfig, check_parity

pytestmark = pytest.mark.integration


def _keras():
    from cnnkit._deps import require_keras

    return require_keras()


def _nested_shared():
    """Conv+BN (fused by tf2onnx), a nested model, a layer called twice, a merge."""
    keras = _keras()
    L = keras.layers
    inner = keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(4, 3, padding="same", name="inner_conv"),
                              L.BatchNormalization(name="inner_bn")], name="inner")
    inp = keras.Input((16, 16, 3))
    x = L.Rescaling(1 / 255.0, name="rescale")(inp)
    x = L.Conv2D(4, 3, strides=2, padding="same", use_bias=False, name="conv")(x)
    x = L.BatchNormalization(name="conv_bn")(x)
    x = L.ReLU(name="relu")(x)
    x = inner(x)
    shared = L.Conv2D(4, 1, name="shared")
    a = shared(x)
    b = shared(a)
    x = L.Add(name="add")([a, b])
    x = L.GlobalAveragePooling2D(name="pool")(x)
    out = L.Dense(5, activation="softmax", name="predictions")(x)
    model = keras.Model(inp, out, name="nested")
    rng = np.random.default_rng(0)
    for layer in [*model.layers, *inner.layers]:
        if type(layer).__name__ == "BatchNormalization":
            g, beta, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2, v.shape)])
    return model


def test_layer_table_with_nested_shared_and_fused_layers(tmp_path: Path) -> None:
    src, out = tmp_path / "nested.keras", tmp_path / "nested.onnx"
    _nested_shared().save(src)
    export_onnx(ExportConfig(src, out))
    result = check_parity(ParityConfig(src, out, dataset="digits", samples=20, batch_sizes=(1, 3), layers=True))
    assert result.passed, result.failures
    rows = {r.layer: r for r in result.layers}
    assert rows["conv"].layout == "fused into conv_bn" and rows["conv"].onnx_tensor == rows["conv_bn"].onnx_tensor
    assert rows["conv_bn"].max_abs is not None and not rows["conv_bn"].diverges
    assert rows["shared"].max_abs is not None  # a layer called twice: its first call is compared
    assert not any(r.diverges for r in result.layers)

    # The same table runs on every failure: plant a fault after the shared layer; the table still comes out.
    model = onnx.load(str(out))
    dense = next(i for i in model.graph.initializer if len(i.dims) == 2)
    w = numpy_helper.to_array(dense).copy()
    w[:, 0] += 2.0
    dense.CopyFrom(numpy_helper.from_array(w, dense.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    bad = check_parity(ParityConfig(src, tmp_path / "bad.onnx", dataset="digits", samples=20, batch_sizes=(2,)))
    assert not bad.passed and bad.first_divergent_layer == "predictions"
    assert len(bad.layers) == len(result.layers)


def test_constant_outputs_are_refused(tmp_path: Path) -> None:
    """A model that ignores its input passes any tolerance: parity says it proves nothing and fails."""
    keras = _keras()
    L = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Dense(3, kernel_initializer="zeros",
                                                                              bias_initializer="ones", name="flat")])
    src = tmp_path / "const.keras"
    model.save(src)
    export_onnx(ExportConfig(src, tmp_path / "const.onnx"))
    result = check_parity(ParityConfig(src, tmp_path / "const.onnx", dataset="none", batch_sizes=(2,)))
    assert not result.passed and result.inputs["output_spread"] == 0.0
    assert "parity on constant outputs proves nothing" in result.failures[0]
    assert result.outputs[0].passed  # the outputs do match; the check is what is vacuous


def test_calibrated_mobilenet_v2_keras_vs_nhwc_and_nchw_onnx(tmp_path: Path) -> None:
    """keras.applications MobileNetV2 (random weights, BatchNorm calibrated on real digits): export, parity with
    the layer table against the export and against an NCHW graph of it; images go through the 'tf' record."""
    from cnnkit._deps import require_tensorflow, require_tf2onnx
    from cnnkit.data.preprocess import PreprocessChoice, preset
    from cnnkit.data.datasets import load_dataset
    from cnnkit.keras.batchnorm import calibrate_batchnorm

    keras = _keras()
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10)
    tf_record = preset("tf").bind(32, 32, 3, "NHWC", "float32")
    digits = load_dataset("digits")
    calibration = calibrate_batchnorm(model, tf_record.prepare(digits.x_train[:64]), batch_size=32)
    assert calibration.output_spread_after > 1e-3
    src = tmp_path / "mnv2.keras"
    model.save(src)
    export_onnx(ExportConfig(src, tmp_path / "mnv2.onnx", preprocess="tf"))
    result = check_parity(ParityConfig(src, tmp_path / "mnv2.onnx", dataset="digits", samples=24,
                                       batch_sizes=(1, 5), layers=True))
    assert result.passed, result.failures
    assert result.inputs["preprocess"]["name"] == "tf" and result.inputs["output_spread"] > 1e-3
    rows = {r.layer: r for r in result.layers}
    assert rows["Conv1"].layout == "fused into bn_Conv1"
    assert sum(r.max_abs is not None for r in result.layers) > 50 and not any(r.diverges for r in result.layers)

    tf, tf2onnx = require_tensorflow(), require_tf2onnx()
    spec = tf.TensorSpec((None, 32, 32, 3), tf.float32, name="images")
    fn = tf.function(lambda x: {"probabilities": model(x, training=False)}, input_signature=[spec])
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=17, inputs_as_nchw=["images"])
    onnx.save(proto, str(tmp_path / "nchw.onnx"))
    nchw = check_parity(ParityConfig(src, tmp_path / "nchw.onnx", dataset="digits", samples=24, batch_sizes=(3,),
                                     preprocess=PreprocessChoice(preset="tf")))
    assert nchw.passed, nchw.failures
    assert nchw.inputs["preprocess"]["layout"] == "NCHW"
