"""Where Keras and ONNX part: each Keras layer's output against the matching intermediate ONNX tensor, and the first
layer that diverges named."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.graph import metadata as meta
from cnnkit.graph.index import GraphIndex
from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner
from cnnkit.runtimes.sessions import SessionConfig

LAYER_RTOL = 1e-4  # a layer diverges when max |diff| exceeds this share of its largest |activation|


@dataclass(frozen=True)
class LayerDiff:
    layer: str
    layer_class: str
    onnx_tensor: str | None  # None: no counterpart in the graph (fused away or missing)
    layout: str
    shape: tuple[int, ...]
    max_abs: float | None
    scale: float | None  # the layer's largest |activation| in the reference
    rel: float | None  # max_abs / scale
    diverges: bool
    nonfinite: int = 0  # NaN/Inf values in the layer's output, Keras and ONNX together (a divergence)


LAYER_TABLE_MAX_BYTES = 1 << 30  # Keras and ONNX activations held at once for the per-layer table
LAYER_TABLE_MAX_SAMPLES = 8


def localize_divergence(keras_runner: Any, onnx_path: Path, x_ref: np.ndarray, session: SessionConfig,
                        layer_rtol: float = LAYER_RTOL, x_onnx: np.ndarray | None = None,
                        ) -> tuple[list[LayerDiff], str | None, str | None]:
    """Compare each Keras layer's output with its ONNX tensor; name the first layer that diverges.

    ``x_ref`` is the Keras feed, ``x_onnx`` the same images as the ONNX model takes them (default: the same;
    an NCHW graph gets them transposed). Returns the per-layer table, the first divergent layer (or None) and a one-line
    explanation. Layers with no tensor to compare (fused, called more than once, several outputs, a shape
    that does not line up) are listed as unmatched, never a crash.
    """
    import onnx

    from cnnkit.graph.index import map_layers_to_tensors, with_extra_outputs

    x_onnx = x_ref if x_onnx is None else x_onnx
    model = onnx.load(str(onnx_path))
    layers = keras_runner.layers()
    comparable, why_not = _comparable_layers(layers)
    n = _layer_table_samples(comparable, len(x_ref))
    x_ref, x_onnx = x_ref[:n], x_onnx[:n]
    refs = map_layers_to_tensors(model, [layer.name for layer in comparable])
    folded = meta.folded_layers(meta.read(model))  # whose work cnnkit's export moved into another node
    tensors = list(dict.fromkeys(t for r in refs.values() for t in (r.tensor, *r.alternatives)))
    runner = create_runner(DEFAULT_RUNTIME, with_extra_outputs(model, tensors), session, label="onnx-layers")
    onnx_values = runner.infer({runner.input_name: x_onnx})
    keras_values = keras_runner.infer_layers(x_ref, comparable)
    index = GraphIndex.of(model)

    rows: list[LayerDiff] = []
    for i, layer in enumerate(layers):
        cls = type(layer).__name__
        if layer.name not in keras_values:
            rows.append(LayerDiff(layer.name, cls, None, why_not.get(layer.name, "-"), (), None, None, None, False))
            continue
        ref = keras_values[layer.name].astype(np.float64)
        tref = refs.get(layer.name)
        finite_ref = np.abs(ref[np.isfinite(ref)])
        scale = float(finite_ref.max()) if finite_ref.size else 0.0
        if tref is None:
            layout = "folded" if layer.name in folded else _fused_into(layers, i, refs) or "-"
            fused = refs.get(layout[len("fused into "):]) if layout.startswith("fused into ") else None
            rows.append(LayerDiff(layer.name, cls, fused.tensor if fused else None, layout, tuple(ref.shape), None,
                                  scale, None, False))
            continue
        tensor, got, layout = _matching_tensor(tref, onnx_values, ref.shape, model, index)
        if got is None:  # no tensor of the layer's scope has its output's shape
            shape = "x".join(map(str, onnx_values[tref.tensor].shape))
            rows.append(LayerDiff(layer.name, cls, tref.tensor, f"unmatched: ONNX shape {shape}", tuple(ref.shape), None,
                                  scale, None, False))
            continue
        bad = int(np.sum(~np.isfinite(got)) + np.sum(~np.isfinite(ref)))
        if bad:  # a NaN difference is never "> threshold": non-finite values are a divergence of their own
            rows.append(LayerDiff(layer.name, cls, tensor, layout, tuple(ref.shape), None, scale, None, True,
                                  nonfinite=bad))
            continue
        max_abs = float(np.abs(got - ref).max()) if ref.size else 0.0
        rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else None)
        rows.append(LayerDiff(layer.name, cls, tensor, layout, tuple(ref.shape), max_abs, scale, rel,
                              rel is None or rel > layer_rtol))

    first, why = _first_divergence(rows, layer_rtol)
    return rows, first, why


def _matching_tensor(tref: Any, values: dict[str, np.ndarray], shape: tuple[int, ...], model: Any,
                     index: GraphIndex) -> tuple[str, np.ndarray | None, str]:
    """The first of the scope's leaving tensors that holds the layer's output shape (NCHW ones transposed)."""
    from cnnkit.graph.index import tensor_layout

    for i, tensor in enumerate((tref.tensor, *tref.alternatives)):
        got = values[tensor].astype(np.float64)
        layout = tref.layout if i == 0 else tensor_layout(model, tensor, index)
        if got.ndim == 4 and (layout == "NCHW" or (layout == "unknown" and got.shape != shape
                                                     and got.transpose(0, 2, 3, 1).shape == shape)):
            got, layout = got.transpose(0, 2, 3, 1), "NCHW->NHWC"
        if got.shape == shape:
            return tensor, got, layout
    return tref.tensor, None, tref.layout


def _comparable_layers(layers: list[Any]) -> tuple[list[Any], dict[str, str]]:
    """Layers with one output tensor in this model; the others with the reason they are left out."""
    keep, why = [], {}
    for layer in layers:
        try:
            out = layer.output
        except (AttributeError, ValueError, RuntimeError):  # called more than once: no single output
            why[layer.name] = "unmatched: called more than once"
            continue
        if isinstance(out, list | tuple | dict):
            why[layer.name] = "unmatched: several outputs"
            continue
        keep.append(layer)
    return keep, why


def _layer_table_samples(layers: list[Any], n: int) -> int:
    """At most 8 samples, fewer where all layers' activations for Keras and ONNX would pass 1 GiB."""
    per_sample = 0
    for layer in layers:
        dims = [d for d in tuple(layer.output.shape)[1:]]
        per_sample += int(np.prod([d if isinstance(d, int) else 1 for d in dims])) * 8 * 2  # float64, both sides
    fit = LAYER_TABLE_MAX_BYTES // max(per_sample, 1)
    return max(1, min(n, LAYER_TABLE_MAX_SAMPLES, int(fit)))


_FUSING = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv1D", "Dense", "Conv2DTranspose"}


def _fused_into(layers: list[Any], i: int, refs: dict[str, Any]) -> str | None:
    """``fused into <bn>`` for a convolution or dense layer whose BatchNormalization tf2onnx folded into it:
    the ONNX node computing both carries the BatchNormalization's name."""
    layer = layers[i]
    if type(layer).__name__ not in _FUSING or i + 1 >= len(layers):
        return None
    nxt = layers[i + 1]
    if type(nxt).__name__ != "BatchNormalization" or nxt.name not in refs:
        return None
    try:
        if nxt.input is not layer.output:
            return None
    except (AttributeError, ValueError, RuntimeError):
        return None
    return f"fused into {nxt.name}"


_NO_OP_LAYERS = {"Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "ActivityRegularization"}


def _first_divergence(rows: list[LayerDiff], layer_rtol: float) -> tuple[str | None, str | None]:
    for i, row in enumerate(rows):
        if row.diverges:
            if row.nonfinite:
                return row.layer, (f"{row.layer} ({row.layer_class}) is the first layer with non-finite values: "
                                   f"{row.nonfinite} NaN/Inf in its Keras and ONNX ({row.onnx_tensor}) outputs")
            if row.max_abs is None:
                return row.layer, f"{row.layer}: ONNX tensor {row.onnx_tensor} has shape {row.shape}, Keras differs"
            share = f"{row.rel:.2g}" if row.rel is not None else "all"
            why = (f"{row.layer} ({row.layer_class}) diverges first: max |diff| {row.max_abs:.3g} = {share} of its "
                   f"largest activation {row.scale:.3g} (threshold {layer_rtol:g}); ONNX tensor {row.onnx_tensor}")
            if i == 0 or all(r.onnx_tensor is None for r in rows[:i]):
                why += "; the first layer already differs: check the input layout and the preprocessing"
            return row.layer, why
        if row.onnx_tensor is None and row.layer_class not in _NO_OP_LAYERS and row.layout == "-":
            nxt = next((r for r in rows[i + 1:] if r.onnx_tensor is not None), None)
            if nxt is not None and nxt.diverges:
                return row.layer, (f"{row.layer} ({row.layer_class}) has no counterpart in the ONNX graph, and "
                                   f"{nxt.layer} after it diverges (max |diff| {nxt.max_abs:.3g}): was it left out of the export?")
    return None, None
