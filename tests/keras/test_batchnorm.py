"""BatchNorm calibration of a random-weight keras.applications model on real images."""

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def _digits_rgb(size: int, n: int) -> np.ndarray:
    """Real images: the bundled 8x8 digits, upscaled with Pillow to size x size RGB, 0..255."""
    from PIL import Image

    from cnnkit.data.datasets import load_dataset

    ds = load_dataset("digits")
    out = [np.asarray(Image.fromarray(img[..., 0]).resize((size, size), Image.BILINEAR).convert("RGB"))
           for img in ds.x_test[:n]]
    return np.stack(out).astype(np.float32)


def test_calibration_makes_a_random_mobilenet_depend_on_its_input() -> None:
    from cnnkit._deps import require_keras
    from cnnkit.keras.batchnorm import batchnorm_layers, calibrate_batchnorm

    keras = require_keras()
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10)
    x = _digits_rgb(32, 64) / 127.5 - 1  # MobileNetV2 takes [-1, 1]
    bns = batchnorm_layers(model)
    momenta = [layer.momentum for layer in bns]
    result = calibrate_batchnorm(model, x, batch_size=16)
    assert result.layers == len(bns) == 52 and result.batches == 4 and result.samples == 64
    assert result.output_spread_before < 1e-6  # the same output for every image: parity would prove nothing
    assert result.output_spread_after > 1e-3 and result.distinct_top1_after > 1
    # The model is left as it was apart from its statistics: inference mode, original momentum.
    assert all("call" not in layer.__dict__ for layer in bns) and [layer.momentum for layer in bns] == momenta
    mean = np.asarray(bns[0].moving_mean)
    assert np.abs(mean).max() > 0 and np.all(np.asarray(bns[0].moving_variance) > 0)
    y1, y2 = np.asarray(model(x[:4], training=False)), np.asarray(model(x[:4], training=False))
    np.testing.assert_array_equal(y1, y2)


def test_calibration_needs_two_images() -> None:
    from cnnkit._deps import require_keras
    from cnnkit.errors import CnnkitError
    from cnnkit.keras.batchnorm import calibrate_batchnorm

    keras = require_keras()
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.BatchNormalization(), keras.layers.Flatten()])
    with pytest.raises(CnnkitError, match="at least 2 images"):
        calibrate_batchnorm(model, np.zeros((1, 4, 4, 1)))
