"""The preprocessing record: presets, JSON round-trip, geometry (size, channels, crop, layout) and values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnkit.data.preprocess import (
    PRESETS, PreprocessChoice, PreprocessError, PreprocessRecord, preset, record_from_metadata, resolve_record,
)


def _images(n: int = 3, h: int = 28, w: int = 28, c: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["tf", "torch", "caffe"])
def test_presets_match_keras_preprocess_input(mode: str) -> None:
    imagenet_utils = pytest.importorskip("keras.applications.imagenet_utils")
    x = _images(4, 16, 16, 3)
    want = np.asarray(imagenet_utils.preprocess_input(x.astype(np.float32).copy(), mode=mode, data_format="channels_last"))
    got = PRESETS[mode].bind(16, 16, 3, "NHWC", "float32").prepare(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_raw_unit_tf_value_ranges() -> None:
    assert PRESETS["raw"].value_range() == (0.0, 255.0)
    assert PRESETS["unit"].value_range() == pytest.approx((0.0, 1.0))
    assert PRESETS["tf"].value_range() == pytest.approx((-1.0, 1.0))
    x = np.array([[[[0], [255]]]], np.uint8)  # 1x1x2x1
    assert PRESETS["unit"].bind(1, 2, 1, "NHWC", "float32").prepare(x).ravel().tolist() == pytest.approx([0, 1])


def test_json_round_trip_and_unknown_fields() -> None:
    r = PRESETS["caffe"].bind(32, 40, 3, "NCHW", "float16")
    assert PreprocessRecord.from_json(r.to_json()) == r
    assert json.loads(r.to_json())["schema"] == "cnnkit.preprocess/1"
    with pytest.raises(PreprocessError, match="unknown field"):
        PreprocessRecord.from_dict(json.loads(r.to_json()) | {"gamma": 2})
    with pytest.raises(PreprocessError, match="not valid JSON"):
        PreprocessRecord.from_json("{nope")


@pytest.mark.parametrize("bad", [{"scale": 0}, {"std": (1.0, 0.0, 1.0)}, {"mean": (1.0, 2.0)},
                                 {"channel_order": "rgba"}, {"layout": "HWC"}, {"crop_fraction": 1.5},
                                 {"dtype": "uint8", "scale": 0.5}])
def test_invalid_records_are_one_line_errors(bad: dict) -> None:
    with pytest.raises(PreprocessError) as info:
        PreprocessRecord("custom", **bad)
    assert "\n" not in info.value.one_line()


def test_grey_digits_fit_a_colour_nchw_model() -> None:
    x = _images(2, 28, 28, 1)
    r = PRESETS["unit"].bind(96, 96, 3, "NCHW", "float32")
    out = r.prepare(x)
    assert out.shape == (2, 3, 96, 96) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], out[:, 1])  # grey replicated into every channel
    assert 0 <= out.min() and out.max() <= 1


def test_colour_to_grey_uses_pil_luma_and_bgr_flips() -> None:
    from PIL import Image

    x = _images(1, 8, 8, 3)
    grey = PRESETS["raw"].bind(8, 8, 1, "NHWC", "float32").prepare(x)
    pil = np.asarray(Image.fromarray(x[0], "RGB").convert("L"), np.float32)
    assert np.abs(grey[0, ..., 0] - pil).max() <= 1
    bgr = PreprocessRecord("x", channel_order="bgr").bind(8, 8, 3, "NHWC", "float32").prepare(x)
    np.testing.assert_array_equal(bgr[0], x[0, ..., ::-1])


def test_centre_crop_keeps_aspect_ratio() -> None:
    from PIL import Image

    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = 255  # a white centre band, half the width
    r = PreprocessRecord("raw", crop_fraction=1.0).bind(10, 10, 3, "NHWC", "float32")
    out = r.fit_image(Image.fromarray(wide))
    assert out.shape == (10, 10, 3) and out.min() > 200  # the crop sees (nearly) only the white band
    stretched = PRESETS["raw"].bind(10, 10, 3, "NHWC", "float32").fit_image(Image.fromarray(wide))
    assert stretched.min() < 50  # stretching keeps the black sides


def test_uint8_model_takes_raw_pixels_only() -> None:
    assert PRESETS["raw"].bind(4, 4, 1, "NHWC", "uint8").prepare(_images(1, 4, 4)).dtype == np.uint8
    with pytest.raises(PreprocessError, match="uint8"):
        PRESETS["unit"].bind(4, 4, 1, "NHWC", "uint8")


def test_metadata_records_and_resolution() -> None:
    bound = PRESETS["tf"].bind(8, 8, 3, "NHWC", "float32")
    assert record_from_metadata({"preprocess": bound.to_json()}).name == "tf"
    old_cnnkit = {"cnnkit_version": "0.1.0", "input_value_range": "[0.0, 255.0]"}
    assert record_from_metadata(old_cnnkit).name == "raw"
    assert record_from_metadata({}) is None
    with pytest.raises(PreprocessError, match="metadata is invalid"):
        record_from_metadata({"preprocess": '{"scale": -1}'})

    rec, note = resolve_record(None, {})
    assert rec.name == "raw" and "no preprocessing record" in note
    rec, note = resolve_record(PreprocessChoice(preset="torch"), {"preprocess": bound.to_json()})
    assert rec.name == "torch" and "metadata says" in note
    rec, note = resolve_record(PreprocessChoice(scale=1 / 255, mean=(0.5,), std=(0.5,)), {})
    assert rec.name == "custom" and rec.value_range() == pytest.approx((-1, 1)) and note is None
    assert "--scale" in rec.source
    with pytest.raises(PreprocessError, match="unknown preprocessing preset"):
        preset("imagenet")
