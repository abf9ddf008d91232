"""Calibrate the BatchNormalization statistics of a random-weight Keras model on real images.

A model built with ``weights=None`` (``keras.applications``) has moving means of 0 and variances of 1 in
every BatchNormalization layer. Through a deep network the activations then vanish or explode, and a
MobileNet or EfficientNet gives the same output for every input: parity on such a model is vacuous. Setting
each layer's moving statistics to what it sees on real images makes the outputs depend on the input again.

How: the images go through the model in batches with only the BatchNormalization layers in training mode
(Dropout, stochastic depth and the rest stay in inference mode), so each of them normalises with its batch
statistics and updates its moving ones; the momentum of batch ``k`` is ``k / (k + 1)``, which makes the
moving statistics the mean of the per-batch ones over all batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.topk import top1

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class BatchNormCalibration:
    """What :func:`calibrate_batchnorm` did, and how much the outputs vary across the images afterwards."""

    layers: int  # BatchNormalization layers whose moving statistics were set
    samples: int
    batches: int
    output_spread_before: float  # max over output elements of (max - min) across the images
    output_spread_after: float
    distinct_top1_after: int  # how many different top-1 classes the images get

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def batchnorm_layers(model: Any) -> list[Any]:
    """Every BatchNormalization layer, nested models included."""
    import keras

    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            out.append(layer)
        elif hasattr(layer, "layers"):
            out += batchnorm_layers(layer)
    return out


def calibrate_batchnorm(model: Any, images: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> BatchNormCalibration:
    """Set the moving mean and variance of every BatchNormalization layer of ``model`` from ``images``.

    ``images`` are what the model takes (NHWC, its own value range), at least 2 per batch. The model is
    changed in place; save it afterwards. Default batch size 32.
    """
    images = np.asarray(images, dtype=np.float32)
    if len(images) < 2 or batch_size < 2:
        raise CnnkitError(f"BatchNorm calibration needs at least 2 images per batch, got {len(images)} image(s), "
                          f"batch size {batch_size}")
    layers = batchnorm_layers(model)
    before = _spread(_outputs(model, images, batch_size))
    starts = [s for s in range(0, len(images), batch_size) if len(images[s:s + batch_size]) >= 2]
    saved = [(layer, layer.momentum, layer.__dict__.get("call")) for layer in layers]
    try:
        for layer in layers:
            layer.call = _always_training(layer)
        for k, start in enumerate(starts):
            for layer in layers:
                layer.momentum = k / (k + 1)
            model(images[start:start + batch_size], training=False)
    finally:
        for layer, momentum, call in saved:
            layer.momentum = momentum
            if call is None:
                del layer.call
            else:
                layer.call = call
    after = _outputs(model, images, batch_size)
    return BatchNormCalibration(
        layers=len(layers), samples=len(images), batches=len(starts), output_spread_before=before,
        output_spread_after=_spread(after), distinct_top1_after=int(len(np.unique(top1(after)))),
    )


def _always_training(layer: Any) -> Any:
    original = type(layer).call

    def call(inputs: Any, training: Any = None, mask: Any = None) -> Any:
        return original(layer, inputs, training=True, mask=mask)

    return call


def _outputs(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    parts = [np.asarray(model(images[s:s + batch_size], training=False)) for s in range(0, len(images), batch_size)]
    return np.concatenate(parts).astype(np.float64)


def _spread(outputs: np.ndarray) -> float:
    flat = outputs.reshape(len(outputs), -1)
    return float((flat.max(axis=0) - flat.min(axis=0)).max()) if len(flat) else 0.0
