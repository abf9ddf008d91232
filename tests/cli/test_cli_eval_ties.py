"""`cnnkit eval` on a model whose scores all tie (issue 19: top-5 was reported below top-1, since top-1 took
argmax and top-5 argpartition, which break ties differently)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli_foundation import run


def _dead_relu_classifier(path: Path, classes: int = 1000) -> Path:
    """28x28x1 images -> mean pixel -> Gemm with bias -1000 -> Relu: every class scores exactly 0."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("GlobalAveragePool", ["nchw"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
        helper.make_node("Relu", ["logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes, "dead_relu", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 28, 28, 1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(np.ones((1, classes), np.float32), "w"),
         numpy_helper.from_array(np.full(classes, -1000.0, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.digits
def test_eval_on_tied_scores_reports_top5_at_least_top1(tmp_path: Path) -> None:
    from cnnkit.data.datasets import load_dataset

    model = _dead_relu_classifier(tmp_path / "dead.onnx")
    r = run("eval", model, "--dataset", "digits", "--json", tmp_path / "eval.json")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "eval.json").read_text())["models"][0]
    y = load_dataset("digits", None, require_train=False).y_test
    # Every class ties at 0: class 0 ranks first, classes 0..4 make the top 5.
    assert m["accuracy"] == pytest.approx(float(np.mean(y == 0)))
    assert m["top5_accuracy"] == pytest.approx(float(np.mean(y < 5)))
    assert m["top5_accuracy"] >= m["accuracy"] > 0
    assert "tied for the top score" in r.output
