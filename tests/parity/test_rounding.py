"""A model's own rounding floor (cnnkit.parity.rounding): all vs no ONNX Runtime graph optimisations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnkit.parity.rounding import rounding_floor
from tests.onnx_graphs import reference_probs, tiny_classifier


def test_floor_of_a_small_model_is_float32_rounding_and_the_outputs_are_the_models(tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx", "NHWC", "N", hw=8, channels=3)
    x = np.random.default_rng(0).integers(0, 256, (70, 8, 8, 3)).astype(np.float32)  # more than one run of 64
    floor, outs = rounding_floor(model, x)
    assert 0.0 <= floor < 1e-5
    np.testing.assert_allclose(outs["probs"], reference_probs(model, x), rtol=0, atol=1e-6)
    # The same model as bytes gives the same floor.
    assert rounding_floor(model.read_bytes(), x, label="bytes")[0] == floor


def test_nonfinite_outputs_leave_the_floor_finite(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    # sqrt(-pixel): NaN for every pixel above 0, 0 for black ones; both builds agree where it is finite.
    graph = helper.make_graph(
        [helper.make_node("Neg", ["image"], ["n"]), helper.make_node("Sqrt", ["n"], ["out"])], "nan",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 4, 4, 1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4, 4, 1])])
    model = tmp_path / "nan.onnx"
    model.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                      .SerializeToString())
    x = np.zeros((3, 4, 4, 1), np.float32)
    x[1:, :2] = 7.0
    floor, outs = rounding_floor(model, x)
    assert floor == 0.0 and np.isnan(outs["out"][1:, :2]).all()
