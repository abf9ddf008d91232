"""A model that wants [0, 1] pixels (like the Keras.io MNIST convnet): exported with its record, evaluated right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_a_unit_range_keras_model_is_evaluated_on_unit_pixels(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from cnnkit.data.preprocess import PreprocessChoice
    from cnnkit.data.datasets import load_dataset
    from cnnkit.evaluate.accuracy import EvalConfig, evaluate_models
    from cnnkit.export.onnx import ExportConfig, export_onnx

    ds = load_dataset("digits")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax"),
    ])  # no Rescaling inside: it wants pixels / 255
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(ds.x_train / 255.0, ds.y_train, epochs=3, batch_size=64, verbose=0)
    model.save(tmp_path / "unit.keras")
    export_onnx(ExportConfig(tmp_path / "unit.keras", tmp_path / "unit.onnx", preprocess="unit"))

    keras_acc = float(np.mean(np.argmax(model(ds.x_test / 255.0), axis=1) == ds.y_test))
    result = evaluate_models(EvalConfig((tmp_path / "unit.onnx",), dataset="digits")).models[0]
    assert result.preprocess["name"] == "unit" and result.preprocess["source"] == "model metadata"
    assert result.accuracy == pytest.approx(keras_acc, abs=1e-9) and keras_acc > 0.8
    raw = evaluate_models(EvalConfig((tmp_path / "unit.onnx",), dataset="digits",
                                     preprocess=PreprocessChoice(preset="raw"))).models[0]
    # Fed 0..255, as cnnkit did before the record: a different figure (here 89.1 % vs 88.3 %, the issue's
    # 88.75 % vs 89.50 % the other way round), which is what the record is for.
    assert raw.accuracy != pytest.approx(keras_acc, abs=1e-9)
