"""The parity inputs: real images, seeded random images and edge cases (all 0, all 255, noisy images), as uint8
pixels that each model gets through its own preprocessing record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.data.folders import SkippedImages
from cnnkit.data.preprocess import PreprocessRecord
from cnnkit.data.sources import ImageSource


@dataclass(frozen=True)
class InputSet:
    """The parity inputs: uint8 pixels ``(N, H, W, C)`` at the models' size, with where each sample came from.
    Each model gets them through its own preprocessing record (:meth:`feed`)."""

    pixels: np.ndarray
    labels: np.ndarray  # -1 where unlabelled
    kinds: tuple[str, ...]  # per sample: "dataset", "random", "zeros", "full-255", "noise"
    dataset: dict[str, Any]

    def feed(self, record: PreprocessRecord | None, index: Any = slice(None)) -> np.ndarray:
        """The inputs as a model takes them; ``record`` None: the values as float32 (a model of signals, not images)."""
        if record is None:
            return np.ascontiguousarray(self.pixels[index], dtype=np.float32)
        return record.normalize(self.pixels[index])

    def __len__(self) -> int:
        return len(self.pixels)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.kinds:
            out[k] = out.get(k, 0) + 1
        return out


def make_inputs(source: ImageSource | None, record: PreprocessRecord | None, samples: int, seed: int,
                labelled: bool = True, skipped: SkippedImages | None = None,
                shape: tuple[int, ...] | None = None) -> InputSet:
    """Real images (up to ``samples``, fitted to the model's size by ``record``), 16 seeded random images,
    2 all-zero, 2 all-255, 8 noisy copies of real images (or of mid-grey). ``record`` None: a model that
    takes ``shape`` (not images), values 0..255 of the same kinds."""
    rng = np.random.default_rng(seed)
    if record is not None:
        h, w = record.size
        shape = (h, w, record.channels)
    assert shape is not None
    parts, labels, kinds = [], [], []
    if source is not None:
        x, y = source.take(samples).load(record, skipped)
        parts.append(x)
        labels.append(y if labelled else np.full(len(x), -1))
        kinds += ["dataset"] * len(x)
    random = rng.integers(0, 256, (16, *shape)).astype(np.uint8)
    zeros, full = np.zeros((2, *shape), np.uint8), np.full((2, *shape), 255, np.uint8)
    base = parts[0][:8].astype(np.float64) if parts and len(parts[0]) else np.full((8, *shape), 128.0)
    noise = np.clip(np.rint(base + rng.normal(0, 40, base.shape)), 0, 255).astype(np.uint8)
    for kind, arr in (("random", random), ("zeros", zeros), ("full-255", full), ("noise", noise)):
        parts.append(arr)
        labels.append(np.full(len(arr), -1))
        kinds += [kind] * len(arr)
    described = source.describe() | {"labelled": labelled} if source is not None else {"name": None}
    return InputSet(
        pixels=np.ascontiguousarray(np.concatenate(parts)),
        labels=np.concatenate(labels).astype(np.int64),
        kinds=tuple(kinds),
        dataset=described,
    )
