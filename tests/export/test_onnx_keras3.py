"""Export of Keras 3 models that need more than the plain route: Normalization statistics, grouped
convolutions that Keras compiles with XLA, and the fallback to Keras' own ``model.export``."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from cnnkit.errors import ExportError
from cnnkit.export.onnx import KERAS_ROUTE, ROUTE, ExportConfig, export_onnx
from cnnkit.parity.check import ParityConfig, check_parity

pytestmark = pytest.mark.integration


def _keras():
    from cnnkit._deps import require_keras

    return require_keras()


def _normalized_grouped(name: str = "normgroup"):
    """Rescaling + an adapted Normalization (EfficientNet's stem), a grouped and a depthwise convolution."""
    keras = _keras()
    L = keras.layers
    rng = np.random.default_rng(0)
    inp = keras.Input((16, 16, 3), name="pixels")
    x = L.Rescaling(1 / 255.0)(inp)
    norm = L.Normalization(axis=-1)
    norm.adapt(rng.random((32, 16, 16, 3)).astype("float32") * np.array([1, 2, 3], "float32") + [0.5, -1, 2])
    x = norm(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(x)
    x = L.Conv2D(8, 3, groups=4, padding="same", name="grouped")(x)
    x = L.Conv2D(8, 7, groups=8, padding="same", name="channelwise")(x)  # ConvNeXt's "depthwise" convolution
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(5, activation="softmax", name="predictions")(x)
    model = keras.Model(inp, out, name=name)
    for layer in model.layers:  # non-zero biases, so no weight tensor is dropped as all-zero
        if layer.weights and type(layer).__name__ in ("Conv2D", "Dense"):
            layer.set_weights([w if w.ndim > 1 else rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in layer.get_weights()])
    return model


def _graph(path: Path) -> tuple[onnx.ModelProto, dict[str, str]]:
    model = onnx.load(str(path))
    return model, {p.key: p.value for p in model.metadata_props}


def test_normalization_and_grouped_convs_export_with_one_input(tmp_path: Path) -> None:
    src = tmp_path / "m.keras"
    _normalized_grouped().save(src)
    result = export_onnx(ExportConfig(src, tmp_path / "m.onnx"))
    model, meta = _graph(tmp_path / "m.onnx")
    assert [i.name for i in model.graph.input] == ["images"]  # Normalization's mean/variance are constants
    groups = sorted(a.i for n in model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group")
    assert groups == [1, 4, 8]  # no XLA call left in the graph
    assert meta["conversion_route"] == ROUTE and "conversion_routes_failed" not in meta
    check = json.loads(meta["conversion_check"])
    assert check["samples"] == 4 and check["max_abs_diff"] <= 1e-5
    assert "Normalization" in result.params_note
    parity = check_parity(ParityConfig(src, tmp_path / "m.onnx", dataset="none", batch_sizes=(1, 5)))
    assert parity.passed, parity.failures


def test_stray_graph_inputs_are_caught_by_the_onnx_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without folding the captured statistics, tf2onnx's graph has 3 inputs: the export names them."""
    from cnnkit.export import graph_checks, keras_routes
    from cnnkit.export import onnx as export

    monkeypatch.setattr(keras_routes, "_fold_captured_inputs", lambda *a, **k: None)
    monkeypatch.setattr(graph_checks, "_drop_unread_inputs", lambda *a, **k: None)
    monkeypatch.setattr(export, "convert_with_keras_export",
                        lambda *a: (_ for _ in ()).throw(ExportError("not tried in this test")))
    src = tmp_path / "m.keras"
    _normalized_grouped().save(src)
    with pytest.raises(ExportError, match=r"one input images \[batch, 16, 16, 3\], it has 3: images") as info:
        export_onnx(ExportConfig(src, tmp_path / "m.onnx"))
    assert "normalization" in str(info.value)
    assert not (tmp_path / "m.onnx").exists()


def test_falls_back_to_keras_export_and_records_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnkit.export import onnx as export

    def broken(*args):
        raise ExportError("tf2onnx could not convert it: simulated")

    monkeypatch.setattr(export, "convert_with_tf2onnx", broken)
    src = tmp_path / "m.keras"
    _normalized_grouped().save(src)
    export_onnx(ExportConfig(src, tmp_path / "m.onnx"))
    model, meta = _graph(tmp_path / "m.onnx")
    assert meta["conversion_route"] == KERAS_ROUTE
    assert json.loads(meta["conversion_routes_failed"]) == ["tf2onnx: tf2onnx could not convert it: simulated"]
    assert [i.name for i in model.graph.input] == ["images"] and [o.name for o in model.graph.output] == ["probabilities"]
    parity = check_parity(ParityConfig(src, tmp_path / "m.onnx", dataset="none", batch_sizes=(1, 5)))
    assert parity.passed, parity.failures


def test_a_route_whose_outputs_differ_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both routes give a graph that computes something else: the export fails and says by how much."""
    from cnnkit.export import onnx as export

    real_finish = export.finish_graph

    def corrupt(model_proto, keras_model, config):
        init = next(i for i in model_proto.graph.initializer if len(i.dims) == 4)
        w = onnx.numpy_helper.to_array(init)
        init.CopyFrom(onnx.numpy_helper.from_array(w + 0.5, init.name))
        return real_finish(model_proto, keras_model, config)

    monkeypatch.setattr(export, "finish_graph", corrupt)
    src = tmp_path / "m.keras"
    _normalized_grouped().save(src)
    with pytest.raises(ExportError, match=r"its outputs differ from Keras by up to .*routes tried: tf2onnx, Keras"):
        export_onnx(ExportConfig(src, tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()
