"""Per-layer summary: output shape, parameter count and receptive field.

The receptive field of a unit is the input window it depends on: ``r_out = r_in + (k_eff - 1) * j_in``
and ``j_out = j_in * stride`` (``j`` is the distance, in input pixels, between neighbouring units).
Specs are summarised arithmetically, with no TensorFlow; Keras models from their layer configs, with
shapes and parameter counts taken from Keras itself.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from cnnkit.errors import SpecError

if TYPE_CHECKING:
    from cnnkit.spec import ModelSpec


@dataclass(frozen=True)
class LayerDesc:
    """What the walker needs to know about one layer. ``kind`` is one of the keys of ``_KINDS``."""

    name: str
    kind: str
    units: int = 0  # filters for convolutions, units for dense, depth multiplier for depthwise
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: str = "valid"
    use_bias: bool = True


_SPATIAL = {"conv2d", "depthwise_conv2d", "separable_conv2d", "max_pool", "avg_pool"}
_KINDS = _SPATIAL | {"dense", "flatten", "global_pool", "batch_norm", "passthrough", "other"}


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    receptive_field: tuple[int, int] | None  # input pixels (h, w) one unit sees; None: not known
    jump: tuple[int, int] | None  # input-pixel distance between neighbouring units; None: not spatial
    input_hw: tuple[int, int]

    @property
    def rf_pixels(self) -> int | None:
        if self.receptive_field is None:
            return None
        return min(self.receptive_field[0], self.input_hw[0]) * min(self.receptive_field[1], self.input_hw[1])

    @property
    def rf_share(self) -> float | None:
        """Share of the input's pixels one unit sees (1.0 once the layer sees the whole image)."""
        px = self.rf_pixels
        return None if px is None else px / (self.input_hw[0] * self.input_hw[1])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rf_pixels"] = self.rf_pixels
        data["rf_share"] = self.rf_share
        return data


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


def _out_len(n: int, k: int, s: int, d: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(n / s)
    return (n - d * (k - 1) - 1) // s + 1


def walk_layers(
    layers: list[LayerDesc], input_shape: tuple[int, ...], spec_source: str = "model"
) -> list[LayerRow]:
    """Compute shape, parameters and receptive field layer by layer (NHWC, batch left out)."""
    if len(input_shape) != 3:
        raise SpecError(f"{spec_source}: expected an image input (height, width, channels), got {input_shape}")
    h_in, w_in = input_shape[0], input_shape[1]
    shape: tuple[int, ...] = tuple(input_shape)
    rf: tuple[int, int] | None = (1, 1)
    jump: tuple[int, int] | None = (1, 1)
    rows = []
    for layer in layers:
        params = 0
        if layer.kind in _SPATIAL:
            if len(shape) != 3:
                raise SpecError(f"{spec_source}: layer {layer.name} needs an image tensor, got shape {shape}")
            h, w, c = shape
            (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilation
            oh, ow = _out_len(h, kh, sh, dh, layer.padding), _out_len(w, kw, sw, dw, layer.padding)
            if oh <= 0 or ow <= 0:
                raise SpecError(
                    f"{spec_source}: layer {layer.name} shrinks {h}x{w} to {oh}x{ow}",
                    hint="use fewer blocks, smaller kernels or strides, or padding 'same'",
                )
            bias = 1 if layer.use_bias else 0
            if layer.kind == "conv2d":
                oc = layer.units
                params = kh * kw * c * oc + bias * oc
            elif layer.kind == "depthwise_conv2d":
                oc = c * layer.units
                params = kh * kw * oc + bias * oc
            elif layer.kind == "separable_conv2d":
                oc = layer.units
                params = kh * kw * c + c * oc + bias * oc
            else:
                oc = c
            shape = (oh, ow, oc)
        elif layer.kind == "batch_norm":
            params = 4 * shape[-1]
        elif layer.kind in ("flatten", "global_pool", "dense"):
            if layer.kind == "flatten":
                shape = (math.prod(shape),)
            elif layer.kind == "global_pool":
                shape = (shape[-1],)
            else:
                if len(shape) != 1:
                    raise SpecError(f"{spec_source}: dense layer {layer.name} needs a flat input, got {shape}")
                params = shape[0] * layer.units + layer.units * (1 if layer.use_bias else 0)
                shape = (layer.units,)
        rf, jump = receptive_field_step(layer, rf, jump, (h_in, w_in))
        rows.append(LayerRow(layer.name, layer.kind, shape, params, rf, jump, (h_in, w_in)))
    return rows


Field = tuple[tuple[int, int] | None, tuple[int, int] | None]  # (receptive field, jump), as in LayerRow


def receptive_field_step(layer: LayerDesc, rf: tuple[int, int] | None, jump: tuple[int, int] | None,
                         image_hw: tuple[int, int]) -> Field:
    """The receptive field and jump after ``layer``, given those of its input (None: not known)."""
    if layer.kind in _SPATIAL:
        if rf is None or jump is None:
            return rf, jump
        (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilation
        keh, kew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        return (rf[0] + (keh - 1) * jump[0], rf[1] + (kew - 1) * jump[1]), (jump[0] * sh, jump[1] * sw)
    if layer.kind in ("flatten", "global_pool", "dense"):
        # Every unit after flattening or global pooling depends on the whole image.
        return image_hw, None
    if layer.kind == "other":
        # An unknown layer: known only when its input already saw the whole image (so does any function of it).
        return (rf, None) if rf is not None and jump is None else (None, None)
    return rf, jump


def merge_fields(fields: list[Field]) -> Field:
    """Where paths join (Add, Concatenate, Multiply): a unit sees what any of its inputs saw, so the largest
    field on any path; the jump of the spatial inputs (an input that saw the whole image has none)."""
    if not fields or any(rf is None for rf, _ in fields):
        return None, None
    rf = (max(f[0][0] for f in fields), max(f[0][1] for f in fields))  # type: ignore[index]
    jumps = [j for _, j in fields if j is not None]
    return rf, ((max(j[0] for j in jumps), max(j[1] for j in jumps)) if jumps else None)


# --- from a spec ---------------------------------------------------------------------------------


def spec_layers(spec: ModelSpec) -> list[LayerDesc]:
    """The layers :func:`cnnkit.build.build_model` creates from ``spec``, in order, with the same names."""
    out = [LayerDesc("rescale", "passthrough")]
    for i, c in enumerate(spec.conv, 1):
        out.append(
            LayerDesc(f"conv{i}", "conv2d", c.filters, c.kernel, c.strides, (1, 1), c.padding.value, not c.batch_norm)
        )
        if c.batch_norm:
            out += [LayerDesc(f"conv{i}_bn", "batch_norm"), LayerDesc(f"conv{i}_act", "passthrough")]
        if c.pool is not None:
            s = c.pool.strides or c.pool.size
            kind = "max_pool" if c.pool.kind.value == "max" else "avg_pool"
            out.append(LayerDesc(f"pool{i}", kind, 0, (c.pool.size,) * 2, (s, s)))
        if c.dropout:
            out.append(LayerDesc(f"conv{i}_dropout", "passthrough"))
    out.append(LayerDesc("flatten", "flatten"))
    for i, d in enumerate(spec.dense, 1):
        out.append(LayerDesc(f"dense{i}", "dense", d.units, use_bias=not d.batch_norm))
        if d.batch_norm:
            out += [LayerDesc(f"dense{i}_bn", "batch_norm"), LayerDesc(f"dense{i}_act", "passthrough")]
        if d.dropout:
            out.append(LayerDesc(f"dense{i}_dropout", "passthrough"))
    out.append(LayerDesc("probabilities", "dense", spec.output.classes))
    return out


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
