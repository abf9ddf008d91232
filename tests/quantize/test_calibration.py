"""Calibration batches: the histogram calibrators (percentile, entropy) stack batches, so all must be equal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnkit.choices import CalibrationMethod, QuantMode
from cnnkit.quantize.config import QuantizeConfig
from cnnkit.quantize.data import CalibrationReader
from cnnkit.quantize.loop import quantize_model
from tests.imaging import write_digit_folder
from tests.onnx_graphs import tiny_classifier


@pytest.mark.parametrize(("n", "sizes"), [(64, {32}), (40, {20}), (41, {1}), (100, {25}), (7, {7})])
def test_dynamic_batch_reader_gives_equal_batches(n: int, sizes: set[int]) -> None:
    reader = CalibrationReader("x", np.zeros((n, 4, 4, 1), np.float32))
    got = [len(b["x"]) for b in reader]
    assert sum(got) == n and set(got) == sizes


def test_fixed_batch_reader_pads_the_last_batch() -> None:
    got = [len(b["x"]) for b in CalibrationReader("x", np.zeros((5, 4, 4, 1), np.float32), fixed_batch=2)]
    assert got == [2, 2, 2]


@pytest.mark.parametrize("method", [CalibrationMethod.PERCENTILE, CalibrationMethod.ENTROPY])
def test_histogram_calibration_on_an_uneven_number_of_images(tmp_path: Path, method: CalibrationMethod) -> None:
    # 41 calibration images used to end in onnxruntime's "inhomogeneous shape" ValueError (a short last batch).
    write_digit_folder(tmp_path / "digits", n=90)
    model = tiny_classifier(tmp_path / "m.onnx", layout="NHWC", batch="N", hw=28, channels=1, seed=3)
    result = quantize_model(QuantizeConfig(model, tmp_path / "m.int8.onnx", mode=QuantMode.STATIC,
                                           calibration_method=method, calibration_samples=41,
                                           data_dir=tmp_path / "digits", max_accuracy_drop=100.0, max_attempts=0,
                                           measure_speed=False, keep_failed=True))
    assert result.dataset["calibration_samples"] == 41
    assert (tmp_path / "m.int8.onnx").exists()
