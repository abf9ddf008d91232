"""Export of the seed CNN and of small models covering the common Keras layers."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from cnnkit.choices import InputDtype
from cnnkit.errors import ExportError, ModelFileError, OutputExistsError
from cnnkit.export.onnx import ROUTE, ExportConfig, export_onnx
from cnnkit.parity.check import ParityConfig, check_parity
from cnnkit.runtimes.onnxruntime import OnnxRuntimeRunner

pytestmark = pytest.mark.integration


def test_seed_cnn_graph(exported_model: Path, trained_model: Path) -> None:
    model = onnx.load(str(exported_model))
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "images" and out.name == "probabilities"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 28, 28, 1]  # NHWC, dynamic batch
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 10]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["conversion_route"] == ROUTE
    assert meta["spec"] == "mnist-cnn" and meta["dataset"] == "digits"
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
    assert meta["input_layout"] == "NHWC" and json.loads(meta["input_value_range"]) == [0.0, 255.0]
    assert json.loads(meta["preprocessing"])[0]["scale"] == pytest.approx(1 / 255)
    from cnnkit.data.preprocess import PreprocessRecord, record_from_metadata

    record = PreprocessRecord.from_json(meta["preprocess"])  # the preprocessing record: raw pixels, the model's geometry
    assert (record.name, record.size, record.channel_order, record.layout, record.dtype) == (
        "raw", (28, 28), "grayscale", "NHWC", "float32")
    assert record_from_metadata(meta).is_identity
    from cnnkit.export.onnx import sha256_file

    assert meta["source_sha256"] == sha256_file(trained_model)
    for lib in ("cnnkit", "tensorflow", "keras", "tf2onnx", "onnx"):
        assert meta[f"{lib}_version"] not in ("", "None")


def test_seed_cnn_result_and_params(trained_model: Path, tmp_path: Path) -> None:
    result = export_onnx(ExportConfig(trained_model, tmp_path / "m.onnx"))
    assert result.keras_params == result.onnx_params == 93_322 and result.params_note == "equal"
    assert result.input_shape == ("batch", 28, 28, 1)
    assert "input scale folded into" in result.simplification and "static shape for 1 reshape" in result.simplification
    # The Rescaling layer's work is in conv1 now, said as data (parity reads it; older models said it in prose only).
    assert json.loads(result.metadata["folded_layers"]) == ["rescale"]


def test_simplified_graph_is_smaller_and_the_same_function(trained_model: Path, tmp_path: Path) -> None:
    import numpy as np

    export_onnx(ExportConfig(trained_model, tmp_path / "raw.onnx", simplify=False))
    export_onnx(ExportConfig(trained_model, tmp_path / "simple.onnx"))
    raw, simple = onnx.load(str(tmp_path / "raw.onnx")), onnx.load(str(tmp_path / "simple.onnx"))
    assert {p.key: p.value for p in raw.metadata_props}["folded_layers"] == "[]"  # nothing folded
    ops = [n.op_type for n in simple.graph.node]
    assert len(ops) < len(raw.graph.node) and "Mul" not in ops and "Shape" not in ops
    x = np.random.default_rng(0).integers(0, 256, (9, 28, 28, 1)).astype(np.float32)
    a = OnnxRuntimeRunner(tmp_path / "raw.onnx").infer({"images": x})["probabilities"]
    b = OnnxRuntimeRunner(tmp_path / "simple.onnx").infer({"images": x})["probabilities"]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_uint8_input(trained_model: Path, exported_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "u8.onnx"
    export_onnx(ExportConfig(trained_model, out, input_dtype=InputDtype.UINT8))
    u8, f32 = OnnxRuntimeRunner(out), OnnxRuntimeRunner(exported_model)
    assert u8.input_type == "tensor(uint8)"
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    got = u8.session.run(None, {"images": x})[0]
    want = f32.session.run(None, {"images": x.astype(np.float32)})[0]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_refuses_to_overwrite(trained_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"mine")
    with pytest.raises(OutputExistsError):
        export_onnx(ExportConfig(trained_model, out))
    assert out.read_bytes() == b"mine"
    export_onnx(ExportConfig(trained_model, out, force=True))
    assert onnx.load(str(out)).graph.input[0].name == "images"


def test_bad_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        export_onnx(ExportConfig(tmp_path / "none.keras", tmp_path / "o.onnx"))
    corrupt = tmp_path / "bad.keras"
    corrupt.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ModelFileError, match="bad.keras is a damaged .keras file"):
        export_onnx(ExportConfig(corrupt, tmp_path / "o.onnx"))
    assert not (tmp_path / "o.onnx").exists()


# --- layer coverage -----------------------------------------------------------------------------------


def _keras():
    from cnnkit._deps import require_keras

    return require_keras()


def _randomize(model) -> None:
    """Trained-looking weights: non-zero biases, non-trivial batch-norm statistics."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization" and layer.weights:
            layer.set_weights([w if w.ndim > 1 else rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in layer.get_weights()])
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2.0, var.shape)])


def _sequential_2d():
    keras = _keras()
    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Rescaling(1 / 255.0),
        L.ZeroPadding2D(2),
        L.Conv2D(8, 5, strides=2, padding="same", activation="relu6"),
        L.DepthwiseConv2D(3, padding="valid", activation="elu"),
        L.SeparableConv2D(12, 3, padding="same", activation="gelu"),
        L.BatchNormalization(),
        L.AveragePooling2D(2),
        L.MaxPooling2D(2, padding="same"),
        L.Dropout(0.3),
        L.Flatten(),
        L.Dense(16, activation="swish"),
        L.Dense(10),
        L.Softmax(),
    ], name="seq2d")


def _functional_branches():
    keras = _keras()
    L = keras.layers
    inp = keras.Input((24, 24, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    a = L.Conv2D(8, 3, padding="same", dilation_rate=2, activation="tanh")(x)
    b = L.Conv2D(8, 1, padding="same", activation="sigmoid")(x)
    x = L.Add()([a, b])
    c = L.Conv2D(4, 3, padding="same")(x)
    c = L.LeakyReLU(0.1)(c)
    x = L.Concatenate()([x, c])
    g1 = L.GlobalAveragePooling2D()(x)
    g2 = L.GlobalMaxPooling2D()(x)
    x = L.Concatenate()([g1, g2])
    x = L.Reshape((4, 6))(x)
    x = L.Flatten()(x)
    out = L.Dense(5, activation="softmax")(x)
    return keras.Model(inp, out, name="branches")


def _conv1d():
    keras = _keras()
    L = keras.layers
    return keras.Sequential([
        keras.Input((64, 2)),
        L.Conv1D(8, 5, strides=2, padding="valid", activation="relu"),
        L.Conv1D(8, 3, dilation_rate=2, padding="causal", activation="relu"),
        L.MaxPooling1D(2),
        L.GlobalAveragePooling1D(),
        L.Dense(3, activation="softmax"),
    ], name="conv1d")


@pytest.mark.parametrize("build", [_sequential_2d, _functional_branches, _conv1d], ids=["sequential-2d", "functional", "conv1d"])
def test_common_layers_export_and_pass_parity(build, tmp_path: Path) -> None:
    model = build()
    _randomize(model)
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    result = export_onnx(ExportConfig(path, tmp_path / f"{model.name}.onnx"))
    if any(type(layer).__name__ == "BatchNormalization" for layer in model.layers):
        assert result.params_note == "equal" or "BatchNormalization" in result.params_note
    else:
        assert result.params_match, result.params_note
    parity = check_parity(ParityConfig(path, tmp_path / f"{model.name}.onnx", dataset="none", batch_sizes=(1, 5)))
    assert parity.passed, parity.failures


def test_zero_biases_dropped_by_tf2onnx_are_explained(tmp_path: Path) -> None:
    model = _functional_branches()  # untrained: every bias is zero
    path = tmp_path / "zero.keras"
    model.save(path)
    result = export_onnx(ExportConfig(path, tmp_path / "zero.onnx"))
    assert not result.params_match and "all-zero weight tensors" in result.params_note


def test_unsupported_op_names_op_and_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnkit.export import keras_routes

    monkeypatch.setattr(keras_routes, "_CUSTOM_OP_HANDLERS", {})  # without cnnkit's Erfc handler, exact GELU fails
    keras = _keras()
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, activation="gelu", name="fancy"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    path = tmp_path / "gelu.keras"
    model.save(path)
    with pytest.raises(ExportError, match=r"cannot convert op Erfc in layer fancy"):
        export_onnx(ExportConfig(path, tmp_path / "gelu.onnx"))
    assert not (tmp_path / "gelu.onnx").exists()


def test_two_inputs_is_a_clear_error(tmp_path: Path) -> None:
    keras = _keras()
    a, b = keras.Input((4, 4, 1)), keras.Input((4, 4, 1))
    model = keras.Model([a, b], keras.layers.Add()([a, b]))
    path = tmp_path / "two.keras"
    model.save(path)
    with pytest.raises(ExportError, match="2 input"):
        export_onnx(ExportConfig(path, tmp_path / "two.onnx"))
    assert not (tmp_path / "two.onnx").exists()
