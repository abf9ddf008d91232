"""Build a Keras model from a :class:`~cnnkit.keras.spec.ModelSpec` (needs the training stack)."""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnkit._deps import require_keras
from cnnkit.errors import ModelFileError, shorten
from cnnkit.filekind import KERAS, require_file, sniff
from cnnkit.keras.spec import ModelSpec, PoolKind


def build_model(spec: ModelSpec) -> Any:
    """A ``keras.Sequential`` named after the spec, taking raw pixels (normalisation is its first layer).

    Layer names match :func:`cnnkit.keras.summary.spec_layers`, so summaries of spec and model line up.
    """
    keras = require_keras()
    L = keras.layers
    layers: list[Any] = [
        keras.Input(shape=spec.input.shape, name="images"),
        L.Rescaling(spec.input.scale, spec.input.offset, name="rescale"),
    ]
    for i, c in enumerate(spec.conv, 1):
        layers.append(
            L.Conv2D(
                c.filters, c.kernel, strides=c.strides, padding=c.padding.value,
                activation=None if c.batch_norm else c.activation, use_bias=not c.batch_norm, name=f"conv{i}",
            )
        )
        if c.batch_norm:
            layers += [L.BatchNormalization(name=f"conv{i}_bn"), L.Activation(c.activation, name=f"conv{i}_act")]
        if c.pool is not None:
            pool_cls = L.MaxPooling2D if c.pool.kind is PoolKind.MAX else L.AveragePooling2D
            layers.append(pool_cls(c.pool.size, strides=c.pool.strides, name=f"pool{i}"))
        if c.dropout:
            layers.append(L.Dropout(c.dropout, name=f"conv{i}_dropout"))
    layers.append(L.Flatten(name="flatten"))
    for i, d in enumerate(spec.dense, 1):
        layers.append(
            L.Dense(d.units, activation=None if d.batch_norm else d.activation, use_bias=not d.batch_norm, name=f"dense{i}")
        )
        if d.batch_norm:
            layers += [L.BatchNormalization(name=f"dense{i}_bn"), L.Activation(d.activation, name=f"dense{i}_act")]
        if d.dropout:
            layers.append(L.Dropout(d.dropout, name=f"dense{i}_dropout"))
    layers.append(L.Dense(spec.output.classes, activation=spec.output.activation, name="probabilities"))
    return keras.Sequential(layers, name=spec.name)


def load_keras_model(path: str | os.PathLike[str], progress: Callable[[str], None] | None = None) -> Any:
    """Load a ``.keras`` file; a missing, unreadable or corrupt file is a one-line :class:`ModelFileError`.

    ``progress`` hears what takes seconds (importing TensorFlow, loading the model) before it starts."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"model file {p} not found", hint="train one with: cnnkit train")
    require_file(p, hint="pass the .keras file itself, not its folder")
    kind = sniff(p)
    if p.suffix != ".keras" or kind != KERAS:
        raise ModelFileError(f"{p} is {kind}, not a Keras 3 .keras model" if kind not in (KERAS, None)
                             else f"{p} is not a .keras file", hint="cnnkit reads Keras 3 .keras model files")
    if not zipfile.is_zipfile(p):  # Keras says "File not found" for a damaged archive
        raise ModelFileError(f"{p} is a damaged .keras file (not a complete zip archive)",
                             hint="is it truncated? save or copy the model again")
    say = progress or (lambda _message: None)
    if "tensorflow" not in sys.modules:
        say("loading TensorFlow")
    keras = require_keras()
    say(f"loading {p.name}")
    try:
        return keras.saving.load_model(str(p), compile=False)
    except Exception as exc:  # noqa: BLE001 (Keras raises many kinds for a bad file)
        detail = shorten(exc, 200)
        raise ModelFileError(f"cannot load {p}: {type(exc).__name__}: {detail}", hint="is it a complete Keras 3 .keras file?") from None
