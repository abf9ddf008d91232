"""The parity gate passes on clean exports and fails, naming the right layer, on planted faults."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from cnnkit.data.preprocess import PreprocessChoice
from cnnkit.parity.check import SCHEMA, ParityConfig, ParityResult, check_parity

pytestmark = pytest.mark.integration


def _config(ref: Path, cand: Path, **kw) -> ParityConfig:
    return ParityConfig(ref, cand, **({"dataset": "digits", "samples": 100} | kw))


def test_clean_export_passes_at_every_batch_size(trained_model: Path, exported_model: Path) -> None:
    result = check_parity(_config(trained_model, exported_model, batch_sizes=(1, 7, 64)))
    assert result.passed, result.failures
    assert [d.batch_size for d in result.outputs] == [1, 7, 64]
    for d in result.outputs:
        assert d.reference_shape == d.candidate_shape == (128, 10)
        assert d.max_abs < 1e-5 and d.top1_agreement == 1.0
        assert d.min_passing_atol <= result.tolerance.atol
        assert d.reference_accuracy == d.candidate_accuracy
    assert result.inputs["counts"] == {"dataset": 100, "random": 16, "zeros": 2, "full-255": 2, "noise": 8}
    assert result.provider["active"] == "CPUExecutionProvider" and not result.provider["fallback"]
    assert result.environment["packages"]["onnxruntime-gpu"] or result.environment["packages"]["onnxruntime"]
    assert result.layers == ()  # no per-layer table unless asked or failing


def test_result_round_trips_through_json(trained_model: Path, exported_model: Path) -> None:
    result = check_parity(_config(trained_model, exported_model, batch_sizes=(3,)))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["schema"] == SCHEMA
    again = ParityResult.from_dict(data)
    assert json.loads(json.dumps(again.to_dict())) == data


def test_layer_table_on_a_pass(trained_model: Path, exported_model: Path) -> None:
    result = check_parity(_config(trained_model, exported_model, batch_sizes=(2,), layers=True))
    assert result.passed and result.first_divergent_layer is None
    by_name = {r.layer: r for r in result.layers}
    assert list(by_name) == ["rescale", "conv1", "pool1", "conv2", "pool2", "conv3", "flatten", "dense1", "probabilities"]
    assert by_name["conv1"].layout == "NCHW->NHWC" and by_name["conv1"].shape == (by_name["conv1"].shape[0], 26, 26, 32)
    # The export folds the input scale into conv1, so the rescale layer has no tensor of its own.
    assert by_name["rescale"].onnx_tensor is None and not by_name["rescale"].diverges
    assert all(r.onnx_tensor and not r.diverges for r in result.layers if r.layer != "rescale")
    assert by_name["rescale"].layout == "folded"  # the export's metadata says so (folded_layers)


def test_layer_table_reads_folded_layers_from_an_older_export(trained_model: Path, exported_model: Path,
                                                              tmp_path: Path) -> None:
    """Exports before ``folded_layers`` said it only in prose (graph_simplification): still read."""
    model = onnx.load(str(exported_model))
    props = {p.key: p.value for p in model.metadata_props}
    assert "input scale folded into" in props["graph_simplification"]
    del props["folded_layers"]
    helper.set_model_props(model, props)
    onnx.save(model, str(tmp_path / "older.onnx"))
    result = check_parity(_config(trained_model, tmp_path / "older.onnx", batch_sizes=(2,), layers=True))
    assert result.passed and {r.layer: r.layout for r in result.layers}["rescale"] == "folded"


def test_unsimplified_export_maps_every_layer(trained_model: Path, tmp_path: Path) -> None:
    from cnnkit.export.onnx import ExportConfig, export_onnx

    export_onnx(ExportConfig(trained_model, tmp_path / "raw.onnx", simplify=False))
    result = check_parity(_config(trained_model, tmp_path / "raw.onnx", batch_sizes=(2,), layers=True))
    assert result.passed and all(r.onnx_tensor and not r.diverges for r in result.layers)


def _perturbed_copy(src: Path, dst: Path, layer: str, delta: float = 0.5) -> None:
    model = onnx.load(str(src))
    init = next(i for i in model.graph.initializer if f"/{layer}_" in i.name and len(i.dims) == 4)
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += delta
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(dst))


@pytest.mark.parametrize("layer", ["conv2", "conv3"])
def test_one_perturbed_weight_fails_and_is_located(trained_model: Path, exported_model: Path, tmp_path: Path, layer: str) -> None:
    bad = tmp_path / "bad.onnx"
    _perturbed_copy(exported_model, bad, layer)
    result = check_parity(_config(trained_model, bad))
    assert not result.passed and result.failures
    assert result.first_divergent_layer == layer
    rows = {r.layer: r for r in result.layers}
    assert not rows["conv1"].diverges and rows[layer].diverges


def test_model_exported_without_normalisation_is_located(trained_model: Path, tmp_path: Path) -> None:
    from cnnkit._deps import require_keras
    from cnnkit.keras.build import load_keras_model
    from cnnkit.export.onnx import ExportConfig, export_onnx

    keras = require_keras()
    model = load_keras_model(trained_model)
    bare = keras.Sequential([keras.Input((28, 28, 1))] + model.layers[1:], name="mnist-cnn")
    bare.save(tmp_path / "bare.keras")
    export_onnx(ExportConfig(tmp_path / "bare.keras", tmp_path / "bare.onnx"))
    result = check_parity(_config(trained_model, tmp_path / "bare.onnx"))
    assert not result.passed
    assert result.first_divergent_layer == "rescale"
    assert "no counterpart" in result.divergence


def test_input_fed_with_wrong_layout_is_located(trained_model: Path, exported_model: Path, tmp_path: Path) -> None:
    """A graph that reads the image with height and width swapped: the very first layer differs."""
    model = onnx.load(str(exported_model))
    graph = model.graph
    first = next(n for n in graph.node if "images" in n.input)
    graph.node.insert(0, helper.make_node("Transpose", ["images"], ["images_swapped"], perm=[0, 2, 1, 3], name="swap_hw"))
    for i, name in enumerate(first.input):
        if name == "images":
            first.input[i] = "images_swapped"
    onnx.save(model, str(tmp_path / "swapped.onnx"))
    result = check_parity(_config(trained_model, tmp_path / "swapped.onnx"))
    assert not result.passed
    # The export folded rescale into conv1, so conv1 is the first layer with an ONNX tensor of its own.
    assert result.first_divergent_layer == "conv1"
    assert "first layer already differs: check the input layout" in result.divergence
    assert {r.layer: r.layout for r in result.layers}["rescale"] == "folded"


def test_nchw_export_is_fed_nchw_through_its_record(trained_model: Path, tmp_path: Path) -> None:
    from cnnkit._deps import require_tensorflow, require_tf2onnx
    from cnnkit.keras.build import load_keras_model

    tf, tf2onnx = require_tensorflow(), require_tf2onnx()
    model = load_keras_model(trained_model)
    spec = tf.TensorSpec((None, 28, 28, 1), tf.float32, name="images")
    fn = tf.function(lambda x: {"probabilities": model(x, training=False)}, input_signature=[spec])
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=17, inputs_as_nchw=["images"])
    onnx.save(proto, str(tmp_path / "nchw.onnx"))
    result = check_parity(_config(trained_model, tmp_path / "nchw.onnx", preprocess=PreprocessChoice(preset="raw")))
    assert result.passed and result.inputs["preprocess"]["layout"] == "NCHW"  # Keras NHWC, the candidate NCHW
    assert result.outputs[0].max_abs < 1e-4


def test_onnx_vs_onnx_gates_on_decisions(exported_model: Path, tmp_path: Path) -> None:
    same = check_parity(_config(exported_model, exported_model))
    assert same.mode == "onnx-onnx" and same.passed and same.tolerance.atol is None
    assert same.outputs[0].max_abs == 0.0
    bad = tmp_path / "bad.onnx"
    _perturbed_copy(exported_model, bad, "conv1", delta=25.0)
    broken = check_parity(_config(exported_model, bad))
    assert not broken.passed
    assert any("top-1 agreement" in f or "accuracy" in f for f in broken.failures)
    # A tight atol can be asked for explicitly.
    strict = check_parity(_config(exported_model, exported_model, atol=0.0))
    assert strict.passed


def test_dataset_that_does_not_fit_is_resized(trained_model: Path, exported_model: Path) -> None:
    from cnnkit.data.datasets import Dataset, DatasetName

    rng = np.random.default_rng(0)
    odd = Dataset(DatasetName.MNIST, "test", np.zeros((2, 32, 32, 3), np.uint8), np.zeros(2, np.int64),
                  rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8), np.zeros(5, np.int64), tuple("0123456789"))
    result = check_parity(_config(trained_model, exported_model), dataset=odd)
    assert result.passed and result.inputs["counts"]["dataset"] == 5
    assert result.inputs["preprocess"]["size"] == [28, 28] and result.inputs["preprocess"]["channel_order"] == "grayscale"


@pytest.mark.shared_data
def test_real_mnist_parity(shared_data: Path, trained_model: Path, exported_model: Path) -> None:
    result = check_parity(ParityConfig(trained_model, exported_model, data_dir=shared_data / "mnist", samples=1000))
    assert result.passed and result.inputs["counts"]["dataset"] == 1000
