"""Ranking nodes by the error they add: the debugger's memory is bounded by the images it is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnkit.quantize import diagnose
from cnnkit.quantize.build import build_variant
from cnnkit.quantize.config import QuantizeConfig
from tests.onnx_graphs import float_ops_between_convs


def test_the_debugger_measures_on_as_many_images_as_its_memory_budget_allows(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """All 64 images of a small graph fit; with a budget smaller than one image's activations, the fewest do (a
    random-weight ConvNeXtTiny once held 22.9 GB of them and was killed)."""
    from onnxruntime.quantization import qdq_loss_debug

    model = float_ops_between_convs(tmp_path / "f.onnx")
    calib = np.random.default_rng(0).uniform(0, 1, (64, 3, 32, 32)).astype(np.float32)
    config = QuantizeConfig(model, tmp_path / "q.onnx")
    build_variant(model, tmp_path / "q.onnx", config, calib, "x", [])
    real = qdq_loss_debug.collect_activations
    seen: list[int] = []

    def counting(path, reader, *args, **kwargs):  # noqa: ANN001, ANN202 (the real debugger, its images counted)
        seen.append(sum(len(b) for b in reader.batches))
        return real(path, reader, *args, **kwargs)

    monkeypatch.setattr(qdq_loss_debug, "collect_activations", counting)
    ranked = diagnose.rank_nodes_by_error(model, tmp_path / "q.onnx", config, calib, "x", [], tmp_path)
    assert ranked and seen == [1, 64, 64]  # one image to size them, then every image for each model
    seen.clear()
    monkeypatch.setattr(diagnose, "ACTIVATION_MEMORY_BYTES", 1)
    assert diagnose.rank_nodes_by_error(model, tmp_path / "q.onnx", config, calib, "x", [], tmp_path)
    assert seen == [1, diagnose.MIN_DEBUG_IMAGES, diagnose.MIN_DEBUG_IMAGES]
