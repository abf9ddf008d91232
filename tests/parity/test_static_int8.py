"""A static INT8 candidate is gated on real images; random and edge-case inputs are measured apart (they clip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnkit.choices import QuantMode
from cnnkit.parity.check import ParityConfig, check_parity
from cnnkit.quantize.config import QuantizeConfig
from cnnkit.quantize.loop import quantize_model
from tests.imaging import write_digit_folder
from tests.onnx_graphs import tiny_classifier


def _int8(model: Path, folder: Path, out: Path) -> Path:
    quantize_model(QuantizeConfig(model, out, mode=QuantMode.STATIC, data_dir=folder, calibration_samples=40,
                                  max_accuracy_drop=100.0, max_attempts=0, measure_speed=False, keep_failed=True))
    return out


def test_static_int8_agreement_is_gated_on_real_images(tmp_path: Path) -> None:
    import onnxruntime as ort

    x, _ = write_digit_folder(tmp_path / "digits", n=80)
    ref = tiny_classifier(tmp_path / "m.onnx", layout="NHWC", batch="N", hw=28, channels=1, seed=3)
    cand = _int8(ref, tmp_path / "digits", tmp_path / "m.int8.onnx")
    result = check_parity(ParityConfig(ref, cand, data_dir=tmp_path / "digits", samples=80, batch_sizes=(5,)))
    d = result.outputs[0]
    assert result.tolerance.agreement_inputs == "dataset"
    assert d.ungated_inputs == 28 and d.ungated_top1_agreement is not None
    # The gated figure is the agreement on the 80 real images, computed here without cnnkit.
    feed = x[..., None].astype(np.float32)
    top = [ort.InferenceSession(str(m)).run(None, {"image": feed})[0].argmax(1) for m in (ref, cand)]
    assert d.top1_agreement == np.mean(top[0] == top[1])


def test_a_different_static_int8_model_still_fails(tmp_path: Path) -> None:
    write_digit_folder(tmp_path / "digits", n=80)
    ref = tiny_classifier(tmp_path / "a.onnx", layout="NHWC", batch="N", hw=28, channels=1, seed=3)
    other = tiny_classifier(tmp_path / "b.onnx", layout="NHWC", batch="N", hw=28, channels=1, seed=103)
    cand = _int8(other, tmp_path / "digits", tmp_path / "b.int8.onnx")
    result = check_parity(ParityConfig(ref, cand, data_dir=tmp_path / "digits", samples=80, batch_sizes=(5,)))
    assert not result.passed
    assert any("top-1 agreement" in f and "dataset" in f for f in result.failures)
