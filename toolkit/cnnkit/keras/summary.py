"""Per-layer summary: output shape, parameter count and receptive field.

The receptive field of a unit is the input window it depends on: ``r_out = r_in + (k_eff - 1) * j_in``
and ``j_out = j_in * stride`` (``j`` is the distance, in input pixels, between neighbouring units).
Specs are summarised arithmetically, with no TensorFlow; Keras models from their layer configs, with
shapes and parameter counts taken from Keras itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnnkit.errors import SpecError
from cnnkit.keras.geometry import (
    Field,
    LayerDesc,
    LayerRow,
    merge_fields,
    receptive_field_step,
    spec_layers,
    walk_layers,
)

if TYPE_CHECKING:
    from cnnkit.keras.spec import ModelSpec


@dataclass(frozen=True)
class ModelSummary:
    name: str
    input_shape: tuple[int, ...]
    layers: tuple[LayerRow, ...] = field(default_factory=tuple)

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "total_params": self.total_params,
            "layers": [r.to_dict() for r in self.layers],
        }


def summarize_spec(spec: ModelSpec) -> ModelSummary:
    rows = walk_layers(spec_layers(spec), spec.input.shape, spec.source or spec.name)
    return ModelSummary(spec.name, spec.input.shape, tuple(rows))


# --- from a Keras model --------------------------------------------------------------------------


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    return (v[0], v[1]) if len(v) >= 2 else (v[0], 1)


# Layers whose units see exactly what their inputs' units at the same position saw (element- or channel-wise,
# merges of several inputs, padding and cropping that only add or drop border units).
_PASSTHROUGH = {
    "Rescaling", "Normalization", "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "Activation",
    "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "InputLayer", "LayerNormalization", "UnitNormalization",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "ZeroPadding2D", "Cropping2D",
    "Identity", "LayerScale", "StochasticDepth",
}


def keras_layer_desc(layer: Any) -> LayerDesc:
    """Map a Keras layer to the walker's vocabulary; unknown layers become ``other``."""
    cls = type(layer).__name__
    name = layer.name
    if cls in _PASSTHROUGH:
        return LayerDesc(name, "passthrough")
    try:
        cfg = layer.get_config()
    except (NotImplementedError, TypeError, AttributeError):  # a bare op or a custom layer without a config
        return LayerDesc(name, "other")

    def conv(kind: str, units: int) -> LayerDesc:
        return LayerDesc(
            name, kind, units, _pair(cfg["kernel_size"]), _pair(cfg["strides"]),
            _pair(cfg.get("dilation_rate", 1)), cfg.get("padding", "valid"), cfg.get("use_bias", True),
        )

    if cls == "Conv2D":
        return conv("conv2d", cfg["filters"])
    if cls == "DepthwiseConv2D":
        return conv("depthwise_conv2d", cfg.get("depth_multiplier", 1))
    if cls == "SeparableConv2D":
        return conv("separable_conv2d", cfg["filters"])
    if cls in ("MaxPooling2D", "AveragePooling2D"):
        size = _pair(cfg["pool_size"])
        strides = _pair(cfg["strides"] if cfg.get("strides") is not None else cfg["pool_size"])
        kind = "max_pool" if cls.startswith("Max") else "avg_pool"
        return LayerDesc(name, kind, 0, size, strides, (1, 1), cfg.get("padding", "valid"))
    if cls in ("GlobalMaxPooling2D", "GlobalAveragePooling2D"):
        return LayerDesc(name, "global_pool")
    if cls == "Flatten":
        return LayerDesc(name, "flatten")
    if cls == "Dense":
        if _output_rank(layer) == 4:  # applied at every position (ConvNeXt's pointwise convolutions): a 1x1 conv
            return LayerDesc(name, "passthrough")
        return LayerDesc(name, "dense", cfg["units"], use_bias=cfg.get("use_bias", True))
    if cls == "BatchNormalization":
        return LayerDesc(name, "batch_norm")
    if cls in _PASSTHROUGH:
        return LayerDesc(name, "passthrough")
    return LayerDesc(name, "other")


def _output_rank(layer: Any) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def summarize_keras(model: Any) -> ModelSummary:
    """Summarise a built Keras model; shapes and parameter counts come from Keras, not the walker.

    Receptive fields: a Sequential model is walked as a chain; a functional one along its graph, taking the
    largest field over the paths into each layer (nested models are followed inside).
    """
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    descs = [keras_layer_desc(layer) for layer in layers]
    fields: dict[str, Field] = {}
    if type(model).__name__ == "Sequential" and len(input_shape) == 3:
        try:
            fields = {r.name: (r.receptive_field, r.jump) for r in walk_layers(descs, input_shape, model.name)}
        except SpecError:
            pass
    elif len(input_shape) == 3:
        fields = _graph_fields(model, ((1, 1), (1, 1)), (input_shape[0], input_shape[1]))
    rows = []
    for layer, desc in zip(layers, descs, strict=True):
        shape = tuple(int(d) for d in layer.output.shape[1:])
        hw = (input_shape[0], input_shape[1]) if len(input_shape) >= 2 else (1, 1)
        rf, jump = fields.get(layer.name, (None, None))
        rows.append(LayerRow(layer.name, desc.kind, shape, int(layer.count_params()), rf, jump, hw))
    return ModelSummary(model.name, input_shape, tuple(rows))


def _graph_fields(model: Any, start: Field, image_hw: tuple[int, int]) -> dict[str, Field]:
    """Receptive field and jump of every layer of a functional model whose input units have ``start``."""
    inputs = [t._keras_history.operation for t in model.inputs]
    operations = list(getattr(model, "operations", model.layers))  # layers and bare ops (x + y), in graph order
    members = {id(op) for op in [*operations, *inputs]}
    fields: dict[str, Field] = {op.name: start for op in inputs}
    for layer in operations:
        if type(layer).__name__ == "InputLayer":
            fields[layer.name] = start
            continue
        parents = _parents(layer, members)
        if parents is None or any(p.name not in fields for p in parents):
            fields[layer.name] = (None, None)  # a layer called more than once, or a graph cnnkit cannot follow
            continue
        incoming = merge_fields([fields[p.name] for p in parents]) if parents else start
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):  # a nested model: follow it inside
            inner = _graph_fields(layer, incoming, image_hw)
            fields[layer.name] = inner.get(layer.outputs[0]._keras_history.operation.name, (None, None))
            continue
        fields[layer.name] = receptive_field_step(keras_layer_desc(layer), *incoming, image_hw)
    return fields


def _parents(layer: Any, members: set[int]) -> list[Any] | None:
    """The layers feeding ``layer`` in this model (None: it is called more than once here)."""
    nodes = [node for node in getattr(layer, "_inbound_nodes", [])
             if all(id(t._keras_history.operation) in members for t in node.input_tensors)]
    if len(nodes) != 1:
        return None
    return [t._keras_history.operation for t in nodes[0].input_tensors]
