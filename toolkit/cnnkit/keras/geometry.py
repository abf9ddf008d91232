"""Layer geometry: output shape, parameter count and receptive field, walked layer by layer.

The receptive field of a unit is the input window it depends on: ``r_out = r_in + (k_eff - 1) * j_in``
and ``j_out = j_in * stride`` (``j`` is the distance, in input pixels, between neighbouring units).
Arithmetic only, no TensorFlow: :mod:`cnnkit.keras.spec` checks a spec's geometry with it at load time and
:mod:`cnnkit.keras.summary` builds its tables on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cnnkit.errors import SpecError

if TYPE_CHECKING:
    from cnnkit.keras.spec import ModelSpec


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
    """The layers :func:`cnnkit.keras.build.build_model` creates from ``spec``, in order, with the same names."""
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
