"""A reference whose top-1 moves under less than a grey level: parity and quantize say so, and never pass on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnkit.errors import CnnkitError
from cnnkit.parity.check import ParityConfig, check_parity
from tests.onnx_graphs import chaotic_classifier, tiny_classifier


def _parity(ref: Path, cand: Path):  # noqa: ANN202
    return check_parity(ParityConfig(ref, cand, dataset="mnist", samples=120))


def test_unstable_reference_is_measured_and_explains_a_failed_agreement(tmp_path: Path) -> None:
    ref = chaotic_classifier(tmp_path / "ref.onnx", gain=1e4)
    same = _parity(ref, ref)
    stability = same.outputs[0].reference_top1_stability
    assert same.passed, same.failures  # the figure is a diagnosis: it never changes a verdict
    assert stability is not None and 0.2 < stability < 0.9
    other = _parity(ref, chaotic_classifier(tmp_path / "cand.onnx", gain=1.01e4))
    assert not other.passed
    agreement = [f for f in other.failures if "top-1 agreement" in f]
    assert agreement and "the reference itself keeps its top-1 on only" in agreement[0]


def test_stable_reference_failure_has_no_such_excuse(tmp_path: Path) -> None:
    ref = tiny_classifier(tmp_path / "ref.onnx", layout="NHWC", batch="N", hw=28, channels=1, seed=3)
    cand = tiny_classifier(tmp_path / "cand.onnx", layout="NHWC", batch="N", hw=28, channels=1, seed=103)
    result = _parity(ref, cand)
    assert result.outputs[0].reference_top1_stability == 1.0  # seeded: this reference keeps every top-1
    assert not result.passed
    assert not any("reference itself" in f for f in result.failures)


def test_quantize_of_unstable_model_is_refused_with_the_reason(tmp_path: Path) -> None:
    from cnnkit.choices import QuantMode
    from cnnkit.quantize.config import QuantizeConfig
    from cnnkit.quantize.loop import quantize_model

    model = chaotic_classifier(tmp_path / "m.onnx", gain=1e4)
    notes: list[str] = []
    with pytest.raises(CnnkitError, match="reference itself keeps its top-1 on only") as err:
        quantize_model(QuantizeConfig(model=model, output=tmp_path / "m.int8.onnx", mode=QuantMode.STATIC,
                                      dataset="mnist", calibration_samples=64, eval_samples=300,
                                      measure_speed=False), progress=notes.append)
    assert "not written" in str(err.value) and not (tmp_path / "m.int8.onnx").exists()
    assert any("FP32's own top-1 holds on only" in n for n in notes)
