"""The pixels bench feeds a model: seeded random 0..255 through the model's preprocessing record."""

from __future__ import annotations

from typing import Any

import numpy as np
from cnnkit.graph.info import OnnxModelInfo


def make_input(info: OnnxModelInfo, batch_size: int, seed: int) -> np.ndarray:
    """A seeded batch of random pixels 0..255 through the model's preprocessing record (its metadata's, else raw
    pixels): the values, layout and dtype the model is fed in use."""
    rng = np.random.default_rng(seed + batch_size)
    if info.input is None:
        return rng.integers(0, 256, (batch_size, *info.image_shape)).astype(np.float32)
    record = input_record(info)
    h, w = record.size
    return record.normalize(rng.integers(0, 256, (batch_size, h, w, record.channels)).astype(np.uint8))


def input_record(info: OnnxModelInfo) -> Any:
    """The bound preprocessing record bench feeds ``info``'s model through."""
    from cnnkit.data.preprocess import record_for_model

    return record_for_model(info)[0]
