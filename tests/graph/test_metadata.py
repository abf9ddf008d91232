"""The ONNX metadata cnnkit writes and reads (cnnkit.graph.metadata), on models built with onnx.helper: metadata
as exports before this module wrote it still reads the same; the input is one description; folded layers come
from their own key, else from the older prose."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import helper

from cnnkit.graph import metadata as meta
from cnnkit.graph.metadata import InputDescription
from tests.onnx_graphs import tiny_classifier

# What `cnnkit export` wrote before graph/metadata.py existed (keys spelled out, as they are in model files).
_RECORD = {"channel_order": "grayscale", "crop_fraction": None, "dtype": "float32", "layout": "NHWC", "mean": [0.0],
           "name": "raw", "scale": 1.0, "schema": "cnnkit.preprocess/1", "size": [8, 8], "source": "model metadata",
           "std": [1.0]}
EARLIER_EXPORT = {
    "cnnkit_version": "0.1.0", "source_model": "model.keras", "source_sha256": "0" * 64, "spec": "mnist-cnn",
    "dataset": "digits", "class_names": json.dumps([str(i) for i in range(5)]),
    "input_layout": "NHWC", "input_dtype": "float32", "input_value_range": json.dumps([0.0, 255.0]),
    "preprocessing": json.dumps([{"layer": "rescale", "op": "rescale", "scale": 1 / 255, "offset": 0.0}]),
    "preprocess": json.dumps(_RECORD, sort_keys=True),
    "conversion_route": "tf2onnx", "conversion_check": json.dumps({"samples": 4}),
    "graph_simplification": "static shape for 1 reshape(s); input scale folded into model/conv1/Conv2D; 5 node(s) removed",
    "opset": "17", "tensorflow_version": "2.21.0", "keras_version": "3.15.0", "tf2onnx_version": "1.17.0",
    "onnx_version": "1.19.0",
}


def _model(tmp_path: Path, props: dict[str, str]) -> Path:
    path = tiny_classifier(tmp_path / "m.onnx", "NHWC", "batch", hw=8, channels=1)
    model = onnx.load(str(path))
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_an_earlier_export_reads_as_it_did(tmp_path: Path) -> None:
    from cnnkit.data.preprocess import record_for_model
    from cnnkit.data.sources import model_class_names
    from cnnkit.graph.info import describe_onnx

    info = describe_onnx(_model(tmp_path, EARLIER_EXPORT))
    assert info.metadata == EARLIER_EXPORT and meta.exported_by_cnnkit(info.metadata)
    assert info.layout == "NHWC" and "metadata (input_layout)" in info.input.layout_reason
    declared = InputDescription.from_metadata(info.metadata)
    assert declared == InputDescription("NHWC", "float32", (0.0, 255.0),
                                        ({"layer": "rescale", "op": "rescale", "scale": 1 / 255, "offset": 0.0},),
                                        EARLIER_EXPORT["preprocess"])
    # Written back, the input keys are the ones the export wrote, value for value.
    assert declared.to_metadata() == {k: EARLIER_EXPORT[k] for k in (
        "input_layout", "input_dtype", "input_value_range", "preprocessing", "preprocess")}
    record, note = record_for_model(info)
    assert record.name == "raw" and record.source == "model metadata" and note is None
    assert model_class_names(info.metadata)[0] == tuple("01234") and meta.dataset(info.metadata) == "digits"
    assert meta.folded_layers(info.metadata) == {"rescale"}  # from the prose: no folded_layers key yet


def test_an_export_before_the_preprocessing_record_is_fed_by_its_value_range(tmp_path: Path) -> None:
    from cnnkit.data.preprocess import record_from_metadata

    older = {k: v for k, v in EARLIER_EXPORT.items() if k != "preprocess"} | {"input_value_range": "[0, 1]"}
    record = record_from_metadata(older)
    assert record.name == "unit" and "input_value_range 0..1" in record.source
    assert record_from_metadata({"input_value_range": "[0, 1]"}) is None  # not cnnkit's export: no guess


def test_folded_layers_key_wins_over_the_prose() -> None:
    assert meta.folded_layers(EARLIER_EXPORT | {"folded_layers": "[]"}) == frozenset()
    assert meta.folded_layers(EARLIER_EXPORT | {"folded_layers": '["rescale", "norm"]'}) == {"rescale", "norm"}
    assert meta.folded_layers(EARLIER_EXPORT | {"graph_simplification": "off"}) == frozenset()
    assert meta.folded_layers({}) == frozenset()


def test_malformed_values_read_as_unsaid() -> None:
    declared = InputDescription.from_metadata({"input_layout": "CHW", "input_value_range": "[0, 255, 3]",
                                               "preprocessing": "{", "input_dtype": ""})
    assert declared == InputDescription()
    assert InputDescription.from_metadata({"input_value_range": '["a", 1]'}).value_range is None
    assert meta.class_names({"class_names": "[1, 2]"}) is None and meta.class_names({"class_names": "x"}) is None
    assert meta.folded_layers({"graph_simplification": "input scale folded into c", "preprocessing": "oops"}) == set()


def test_write_keeps_the_other_keys_and_round_trips(tmp_path: Path) -> None:
    model = onnx.load(str(_model(tmp_path, {"a": "1", meta.BATCH_MADE_DYNAMIC: "old"})))
    described = InputDescription("NCHW", "uint8", (0, 255), ({"layer": "r", "op": "rescale"},), None)
    meta.write(model, {meta.BATCH_MADE_DYNAMIC: "new", **described.to_metadata()})
    props = meta.read(model)
    assert props["a"] == "1" and props["batch_made_dynamic"] == "new" and "preprocess" not in props
    assert props["input_value_range"] == "[0, 255]"
    assert InputDescription.from_metadata(props) == described
    assert meta.version_key("tf2onnx") == "tf2onnx_version"
