"""The accuracy-aware loop tries fixes cheapest first and says what each did; it never runs past its time budget."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from cnnkit.choices import QuantFix
from cnnkit.graph.info import describe_onnx
from cnnkit.graph.index import GraphIndex
from cnnkit.quantize.config import QuantizeConfig, QuantizeError
from cnnkit.quantize.diagnose import depthwise_weights, weight_sqnr
from cnnkit.quantize.loop import quantize_model
from tests.onnx_graphs import depthwise_spread_classifier, write_brightness_folder


@pytest.fixture(scope="module")
def spread(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("spread")
    return depthwise_spread_classifier(root / "m.onnx"), write_brightness_folder(root / "images", n=60)


def _cfg(model: Path, out: Path, images: Path, **kw) -> QuantizeConfig:
    return QuantizeConfig(model, out, data_dir=images, calibration_samples=20, measure_speed=False, **kw)


def test_depthwise_weights_1e3_apart_lose_everything_per_tensor_and_nothing_per_channel(spread) -> None:
    model, _ = spread
    index = GraphIndex.of(onnx.load(str(model)))
    node = next(n for n in index.nodes if n.name == "depthwise")
    assert depthwise_weights(model) == ("wdw",)
    assert weight_sqnr(node, index.initializers, fp16=False) <= 0.5  # the small channels round to zero
    assert weight_sqnr(node, index.initializers, fp16=False, per_channel=True) > 30


def test_per_tensor_fails_and_per_channel_depthwise_is_the_first_fix(spread, tmp_path: Path) -> None:
    model, images = spread
    with pytest.raises(QuantizeError, match=r"tried: as asked: drop \+[0-9.]+ pp"):
        quantize_model(_cfg(model, tmp_path / "no-fix.onnx", images, fixes=()))
    assert not (tmp_path / "no-fix.onnx").exists()

    out = tmp_path / "q.onnx"
    result = quantize_model(_cfg(model, out, images))
    first, second = result.attempts
    assert first.step == "as asked" and not first.within_budget and first.top1_agreement < 0.9
    assert second.step == "per-channel weights for 1 depthwise convolution(s)" and second.kept
    assert second.within_budget and second.top1_agreement >= 0.99 and second.infer_ms_per_image > 0
    assert result.passed and result.excluded_nodes == () and result.recipe["per_channel_weights"] == ["wdw"]
    recipe = json.loads(describe_onnx(out).metadata["quantization"])
    assert recipe["per_channel_weights"] == ["wdw"] and recipe["per_channel"] is False and recipe["excluded_nodes"] == []


def test_a_fix_that_does_not_help_is_undone_and_the_next_is_tried(spread, tmp_path: Path) -> None:
    """Calibration cannot bring zeroed weights back: undone; 16-bit activations cannot either; float can."""
    model, images = spread
    result = quantize_model(_cfg(model, tmp_path / "q.onnx", images,
                                 fixes=(QuantFix.CALIBRATION, QuantFix.WIDE_ACTIVATIONS, QuantFix.FLOAT)))
    steps = [a.step for a in result.attempts]
    assert steps[:2] == ["as asked", "percentile calibration"]
    assert not result.attempts[1].kept and result.recipe["calibration_method"] == "minmax"
    assert all(s.startswith(("16-bit activations around", "float: ")) for s in steps[2:])
    assert result.passed and "depthwise" in result.excluded_nodes
    assert [a.kept for a in result.attempts if a.step.startswith("float: ")] == [True] * sum(
        s.startswith("float: ") for s in steps)


def test_the_time_budget_refuses_and_says_where_it_stopped(spread, tmp_path: Path) -> None:
    model, images = spread
    out = tmp_path / "q.onnx"
    with pytest.raises(QuantizeError, match=r"stopped at its 0.001 s time budget.*before the first build") as info:
        quantize_model(_cfg(model, out, images, max_time_s=0.001))
    assert "--max-time" in info.value.one_line() and not out.exists()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_max_time_must_be_positive_and_finite(tmp_path: Path, bad: float) -> None:
    from cnnkit.errors import CnnkitError

    with pytest.raises(CnnkitError, match="--max-time"):
        QuantizeConfig(tmp_path / "m.onnx", tmp_path / "q.onnx", max_time_s=bad)



def test_explain_measures_each_blamed_node_and_names_the_fix(spread, tmp_path: Path) -> None:
    model, images = spread
    said: list[str] = []
    result = quantize_model(_cfg(model, tmp_path / "q.onnx", images, explain=True), progress=said.append)
    rows = {r["node"]: r for r in result.explanation}
    dw = rows["depthwise"]
    assert dw["op_type"] == "Conv" and dw["weight_sqnr_per_tensor_db"] <= 0.5 and dw["weight_sqnr_per_channel_db"] > 30
    assert dw["activation_sqnr_db"] is not None  # measured by qdq_loss_debug on the variant as asked
    assert dw["fix"] == "per-channel weights" and dw["applied"]  # the loop's first fix
    lines = [m for m in said if m.startswith("explain: depthwise (Conv)")]
    assert len(lines) == 1 and "per tensor 0.0 dB" in lines[0] and "fix: per-channel weights (applied)" in lines[0]
    # Without the fixes the same node's fix is only suggested.
    kept = quantize_model(_cfg(model, tmp_path / "kept.onnx", images, explain=True, fixes=(), keep_failed=True))
    dw = next(r for r in kept.explanation if r["node"] == "depthwise")
    assert dw["fix"] == "per-channel weights" and not dw["applied"] and not kept.passed


def test_no_fix_starts_that_would_end_past_the_budget(spread, tmp_path: Path) -> None:
    """The next step is expected to take as long as the last of its kind: one that would overrun is not started."""
    from cnnkit.choices import CalibrationMethod
    from cnnkit.quantize.config import Attempt, Recipe
    from cnnkit.quantize.loop import _Built, _Clock, _Fixes

    model, images = spread
    fixes = _Fixes(_cfg(model, tmp_path / "q.onnx", images), model, None, "image", tmp_path)
    best = _Built(Recipe(False, CalibrationMethod.MINMAX), Attempt((), 0.5, 50.0, False, 0.5), model)
    roomy, tight = _Clock(3600.0), _Clock(3600.0)
    roomy.took("check", 1.0)
    tight.took("check", 7200.0)  # the last build and check took longer than the whole budget
    assert fixes.next(best, roomy, print) == ("per-channel weights for 1 depthwise convolution(s)",
                                              Recipe(False, CalibrationMethod.MINMAX, per_channel_weights=("wdw",)))
    assert fixes.next(best, tight, print) is None
    assert fixes.stopped is not None and fixes.stopped.startswith("stopped before trying per-channel weights everywhere")
    assert "3600 s time budget (--max-time)" in fixes.stopped and "about 7200 s more" in fixes.stopped


def test_a_fix_the_quantizer_cannot_build_is_skipped_and_the_loop_goes_on(spread, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's percentile calibrator refuses a tensor whose range is too narrow for its 2,048 bins ("Too many
    bins for data range", seen on a random-weight ConvNeXtTiny): that step is recorded as not built, not the end."""
    from cnnkit.choices import CalibrationMethod
    from cnnkit.quantize import loop

    real = loop.build_variant

    def refuse_percentile(source, out, config, *args, **kwargs):  # noqa: ANN001, ANN202
        if config.calibration_method is CalibrationMethod.PERCENTILE:
            raise QuantizeError(f"{config.model}: onnxruntime's quantizer failed: ValueError: Too many bins for data "
                                "range. Cannot create 2048 finite-sized bins.")
        return real(source, out, config, *args, **kwargs)

    monkeypatch.setattr(loop, "build_variant", refuse_percentile)
    model, images = spread
    said: list[str] = []
    result = quantize_model(_cfg(model, tmp_path / "q.onnx", images, fixes=(QuantFix.CALIBRATION, QuantFix.FLOAT)),
                            progress=said.append)
    steps = [a.step for a in result.attempts]
    assert steps[:2] == ["as asked", "percentile calibration"]
    failed = result.attempts[1]
    assert failed.error and "Too many bins" in failed.error and not failed.kept and failed.accuracy is None
    assert any("could not build it (" in m and m.endswith(": skipped") for m in said)
    assert result.passed and "depthwise" in result.excluded_nodes  # the loop went on to keep a node in float
