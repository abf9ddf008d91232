"""How a model wants its pixels, as data: one record, named presets, JSON round-trip, and the code that applies it.

A record turns raw images (uint8 pixels 0..255, any size, grey or colour) into the model's input:

1. geometry: convert to the model's channels (grey <-> RGB), resize to ``size`` (bilinear; or keep the
   aspect ratio, resize the shorter side to ``size / crop_fraction`` and centre-crop, as torchvision does);
2. values: ``(pixel * scale - mean) / std`` per channel, channels in ``channel_order`` (RGB or BGR);
3. the model's ``layout`` (NHWC or NCHW) and ``dtype``.

The presets are the modes of ``keras.applications.imagenet_utils.preprocess_input`` plus two plain scalings:
``raw`` (0..255, what cnnkit's own exports take: normalisation is inside the model), ``unit`` ([0, 1]),
``tf`` ([-1, 1]), ``torch`` (ImageNet mean/std, RGB) and ``caffe`` (BGR, ImageNet mean subtracted, no scaling).
Fields left ``None`` (size, layout, dtype) are the model's own: :meth:`PreprocessRecord.bind` fills them in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.graph import metadata as meta
from cnnkit.graph.metadata import InputDescription

SCHEMA = "cnnkit.preprocess/1"
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications' caffe mode, in BGR order
LAYOUTS = ("NHWC", "NCHW")
CHANNEL_ORDERS = ("rgb", "bgr", "grayscale")
DTYPES = ("float32", "float16", "uint8", "int8")  # int8: pixel - 128 (onnx_info.pixels_to_model)


class PreprocessError(CnnkitError):
    """A preprocessing record or option that is invalid, or that does not fit the model."""


@dataclass(frozen=True)
class PreprocessRecord:
    """How a model wants its pixels. Defaults: the ``raw`` preset (0..255, RGB), size/layout/dtype the model's.

    ``mean`` and ``std`` have one value (all channels) or one per channel, in the order the model sees them
    (``channel_order``): the caffe preset's mean is BGR. A grey (1-channel) model given three values uses
    their average.
    """

    name: str = "raw"  # preset name, or "custom"
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "rgb"  # rgb | bgr | grayscale (a 1-channel model is always grayscale)
    size: tuple[int, int] | None = None  # (height, width); None: the model's
    crop_fraction: float | None = None  # None: stretch the whole image to size; f: resize to size/f, centre-crop
    layout: str | None = None  # NHWC | NCHW; None: the model's
    dtype: str | None = None  # float32 | float16 | uint8 | int8; None: the model's
    source: str = "preset"  # where the record came from, for results: "model metadata", "--preprocess raw", ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.size is not None:
            object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        problems = []
        if not np.isfinite(self.scale) or self.scale <= 0:
            problems.append(f"scale must be a positive number, got {self.scale}")
        for what, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, 3):
                problems.append(f"{what} needs 1 or 3 values, got {len(values)}")
            if not all(np.isfinite(v) for v in values):
                problems.append(f"{what} must be finite, got {list(values)}")
        if any(v == 0 for v in self.std):
            problems.append(f"std must not be 0, got {list(self.std)}")
        if self.channel_order not in CHANNEL_ORDERS:
            problems.append(f"channel order must be one of {', '.join(CHANNEL_ORDERS)}, got {self.channel_order!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            problems.append(f"size must be (height, width) > 0, got {self.size}")
        if self.crop_fraction is not None and not 0 < self.crop_fraction <= 1:
            problems.append(f"crop fraction must be in (0, 1], got {self.crop_fraction}")
        if self.layout is not None and self.layout not in LAYOUTS:
            problems.append(f"layout must be NHWC or NCHW, got {self.layout!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.dtype in ("uint8", "int8") and not self.is_identity:
            problems.append(f"a {self.dtype} input takes raw pixels: scale 1, mean 0, std 1")
        if problems:
            raise PreprocessError(f"invalid preprocessing record '{self.name}': {'; '.join(problems)}",
                                  hint="e.g. --preprocess unit, or --scale 0.00392 --mean 0 --std 1")

    # --- describing --------------------------------------------------------------------------------

    @property
    def is_identity(self) -> bool:
        """Values pass unchanged (raw pixels)."""
        return self.scale == 1.0 and all(v == 0 for v in self.mean) and all(v == 1 for v in self.std)

    @property
    def channels(self) -> int:
        return 1 if self.channel_order == "grayscale" else 3

    def value_range(self) -> tuple[float, float]:
        """The range pixels 0..255 map to (over all channels)."""
        mean, std = np.broadcast_arrays(np.asarray(self.mean), np.asarray(self.std))
        ends = np.concatenate([(0.0 - mean) / std, (255.0 * self.scale - mean) / std])
        return float(ends.min()), float(ends.max())

    def describe(self) -> str:
        """One line for humans: ``unit: pixels*0.00392, RGB, 96x96 NHWC float32``."""
        parts = [f"pixels*{self.scale:.6g}" if self.scale != 1 else "pixels"]
        if any(self.mean):
            parts.append(f"- {_fmt(self.mean)}")
        if any(v != 1 for v in self.std):
            parts.append(f"/ {_fmt(self.std)}")
        text = f"{self.name}: {' '.join(parts)}, {self.channel_order.upper() if self.channel_order != 'grayscale' else 'grey'}"
        if self.size is not None:
            crop = f" (centre crop {self.crop_fraction:g})" if self.crop_fraction else ""
            text += f", {self.size[0]}x{self.size[1]}{crop}"
        if self.layout:
            text += f" {self.layout}"
        if self.dtype:
            text += f" {self.dtype}"
        return text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["size"] = list(self.size) if self.size is not None else None
        return {"schema": SCHEMA} | d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> PreprocessRecord:
        if not isinstance(data, dict):
            raise PreprocessError(f"a preprocessing record must be a JSON object, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known - {"schema"})
        if unknown:
            raise PreprocessError(f"preprocessing record has unknown field(s) {', '.join(unknown)}")
        d = dict(data)
        d.pop("schema", None)
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(d[key]) if isinstance(d[key], list | tuple) else (d[key],)
        if d.get("size") is not None:
            d["size"] = tuple(d["size"])
        try:
            return cls(**d)
        except TypeError as exc:
            raise PreprocessError(f"invalid preprocessing record: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> PreprocessRecord:
        try:
            return cls.from_dict(json.loads(text))
        except ValueError as exc:
            raise PreprocessError(f"preprocessing record is not valid JSON ({exc})") from None

    # --- fitting a model ----------------------------------------------------------------------------

    def bind(self, height: int, width: int, channels: int, layout: str, dtype: str) -> PreprocessRecord:
        """This record with the model's geometry filled in where the record leaves it open.

        A 1-channel model is fed grey images; a 3-channel one RGB or BGR (a grey record for it is an error).
        """
        if channels not in (1, 3):
            raise PreprocessError(f"the model takes {channels}-channel images; cnnkit feeds 1 (grey) or 3 (colour)")
        order = self.channel_order
        if channels == 1:
            order = "grayscale"
        elif order == "grayscale":
            raise PreprocessError(f"preprocessing '{self.name}' is greyscale, the model takes 3-channel images",
                                  hint="use a colour preset, e.g. --preprocess raw")
        size = self.size or (height, width)
        if tuple(size) != (height, width):
            raise PreprocessError(f"preprocessing '{self.name}' resizes to {size[0]}x{size[1]}, the model takes {height}x{width}")
        if self.layout is not None and self.layout != layout:
            raise PreprocessError(f"preprocessing '{self.name}' is {self.layout}, the model's input is {layout}")
        mean, std = self.mean, self.std
        if channels == 1:  # one grey channel: the average of per-channel statistics
            mean, std = (float(np.mean(mean)),), (float(np.mean(std)),)
        bound_dtype = dtype if dtype in DTYPES else "float32"
        if bound_dtype in ("uint8", "int8") and not self.is_identity:
            raise PreprocessError(f"the model takes {bound_dtype} pixels, preprocessing '{self.name}' scales them",
                                  hint=f"a {bound_dtype} model takes raw pixels: --preprocess raw")
        return replace(self, channel_order=order, size=(height, width), layout=layout, dtype=bound_dtype,
                       mean=mean, std=std)

    def _require_bound(self) -> tuple[int, int]:
        if self.size is None or self.layout is None or self.dtype is None:
            raise RuntimeError("PreprocessRecord.bind() the record to a model before applying it")
        return self.size

    # --- applying -------------------------------------------------------------------------------------

    def fit_image(self, image: Any) -> np.ndarray:
        """A PIL image -> uint8 ``(H, W, C)`` at the model's size and channels (no value scaling yet)."""
        from PIL import Image

        h, w = self._require_bound()
        mode = "L" if self.channels == 1 else "RGB"
        if image.mode != mode:
            # Palette and alpha images: drop alpha onto nothing (as Keras' loader does); 16-bit grey via 8-bit.
            if image.mode in ("I;16", "I;16B", "I", "F") and mode == "L":
                arr = np.asarray(image, dtype=np.float64)
                peak = 65535.0 if image.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
                image = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
            else:
                image = image.convert(mode)
        if self.crop_fraction is not None:
            image = _resize_and_centre_crop(image, h, w, self.crop_fraction)
        elif image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(image, dtype=np.uint8)
        return arr.reshape(h, w, self.channels)

    def fit_array(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, h, w, c)`` (c = 1 or 3, any size) -> uint8 ``(N, H, W, C)`` at the model's size and channels."""
        h, w = self._require_bound()
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
            raise PreprocessError(f"images must be (N, height, width, 1|3|4 channels), got {tuple(x.shape)}")
        if x.dtype != np.uint8:
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if x.shape[-1] == 4:
            x = x[..., :3]
        if x.shape[1:3] == (h, w) and self.crop_fraction is None:
            return _convert_channels(x, self.channels)
        from PIL import Image

        out = np.empty((len(x), h, w, self.channels), np.uint8)
        for i, img in enumerate(x):
            pil = Image.fromarray(img[..., 0], "L") if img.shape[-1] == 1 else Image.fromarray(img, "RGB")
            out[i] = self.fit_image(pil)
        return out

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """Pixels ``(N, H, W, C)`` at the model's size (uint8 or float 0..255) -> the model's input array."""
        from cnnkit.graph.info import pixels_to_model

        self._require_bound()
        if self.dtype in ("uint8", "int8"):
            x = np.asarray(images)  # raw pixels (int8: shifted by -128 in pixels_to_model)
        else:
            x = np.asarray(images, dtype=np.float32)
            if self.channel_order == "bgr":
                x = x[..., ::-1]
            if not self.is_identity:
                mean = np.asarray(self.mean, np.float32)
                std = np.asarray(self.std, np.float32)
                x = (x * np.float32(self.scale) - mean) / std
        return pixels_to_model(x, self.layout, self.dtype)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 images of any size -> the model's input: :meth:`fit_array`, then :meth:`normalize`."""
        return self.normalize(self.fit_array(images))


def _fmt(values: tuple[float, ...]) -> str:
    return "/".join(f"{v:.6g}" for v in values) if len(values) > 1 else f"{values[0]:.6g}"


def _convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    if x.shape[-1] == channels:
        return x
    if channels == 3:  # grey -> RGB: the grey value in every channel
        return np.repeat(x, 3, axis=-1)
    # RGB -> grey with PIL's "L" weights (ITU-R 601-2 luma), so arrays and decoded files agree.
    luma = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]


def _resize_and_centre_crop(image: Any, h: int, w: int, fraction: float) -> Any:
    from PIL import Image

    iw, ih = image.size
    scale = max(h / fraction / ih, w / fraction / iw)  # the shorter side becomes size / fraction
    rw, rh = max(w, round(iw * scale)), max(h, round(ih * scale))
    image = image.resize((rw, rh), Image.Resampling.BILINEAR)
    left, top = (rw - w) // 2, (rh - h) // 2
    return image.crop((left, top, left + w, top + h))


# --- presets --------------------------------------------------------------------------------------------

PRESETS: dict[str, PreprocessRecord] = {
    "raw": PreprocessRecord("raw"),
    "unit": PreprocessRecord("unit", scale=1 / 255),
    "tf": PreprocessRecord("tf", scale=1 / 127.5, mean=(1.0,)),
    "torch": PreprocessRecord("torch", scale=1 / 255, mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB),
    "caffe": PreprocessRecord("caffe", channel_order="bgr", mean=CAFFE_MEAN_BGR),
}
# How to find out which preset a model wants (cnnkit.evaluate.probe): named wherever cnnkit guesses raw pixels.
PROBE_HINT = "cnnkit predict MODEL --probe-preprocess --data-dir DIR"
NO_RECORD_SOURCE = "default (the model carries no preprocessing record)"


PREPROCESS_FIX = f"pass --preprocess unit|tf|torch|caffe ({PROBE_HINT} says which)"


def guessed_raw_pixels(record: PreprocessRecord | None) -> str | None:
    """Where ``record`` is cnnkit's guess (the model carries no record and none was given, so raw pixels): the
    words that name it as the likely cause of erratic or constant answers. None for a record that was said."""
    if record is None or record.source != NO_RECORD_SOURCE:
        return None
    return ("it was fed raw pixels 0..255, as the model carries no preprocessing record and none was given, and most "
            "pretrained models want other values")
PRESET_HELP = ("raw (0..255), unit ([0, 1]), tf ([-1, 1]), torch (ImageNet mean/std, RGB), "
               "caffe (BGR, ImageNet mean subtracted)")


def preset(name: str) -> PreprocessRecord:
    try:
        return replace(PRESETS[name.lower()], source=f"--preprocess {name.lower()}")
    except KeyError:
        raise PreprocessError(f"unknown preprocessing preset '{name}'",
                              hint=f"choose one of {', '.join(PRESETS)}, or give --scale/--mean/--std") from None


def preset_for_value_range(value_range: Any) -> PreprocessRecord | None:
    """The preset whose values span ``value_range`` ([0, 255] raw, [0, 1] unit, [-1, 1] tf), else ``None``."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        return None
    for name in ("raw", "unit", "tf"):
        if np.allclose(PRESETS[name].value_range(), (lo, hi), rtol=0, atol=1e-6):
            return PRESETS[name]
    return None


def record_from_metadata(metadata: dict[str, str]) -> PreprocessRecord | None:
    """The record a model carries in its ONNX metadata; cnnkit exports that predate the record take raw pixels.

    ``None`` when the model says nothing (a model from another exporter).
    """
    declared = InputDescription.from_metadata(metadata)
    if declared.preprocess:
        try:
            return replace(PreprocessRecord.from_json(declared.preprocess), source="model metadata")
        except PreprocessError as exc:
            raise PreprocessError(f"the model's '{meta.PREPROCESS}' metadata is invalid: {exc.message}",
                                  hint="pass --preprocess to override it") from None
    if meta.exported_by_cnnkit(metadata) and declared.value_range is not None:
        lo, hi = declared.value_range
        found = preset_for_value_range((lo, hi))  # cnnkit exports before the record (raw: normalisation inside)
        if found is not None:
            return replace(found, source=f"model metadata ({meta.INPUT_VALUE_RANGE} {lo:g}..{hi:g})")
    return None


@dataclass(frozen=True)
class PreprocessChoice:
    """What the user asked for: a preset name and/or explicit values (each ``None`` when not given)."""

    preset: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str | None = None  # rgb | bgr
    crop_fraction: float | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.preset, self.scale, self.mean, self.std, self.channel_order,
                                           self.crop_fraction))


def resolve_record(choice: PreprocessChoice | None, metadata: dict[str, str]) -> tuple[PreprocessRecord, str | None]:
    """The record to feed a model: the user's choice over the model's metadata; ``raw`` when neither says.

    Returns the (unbound) record and a line to show the user, or ``None`` when there is nothing to say.
    """
    choice = choice or PreprocessChoice()
    from_model = record_from_metadata(metadata)
    if not choice.given:
        if from_model is not None:
            return from_model, None
        return (replace(PRESETS["raw"], source=NO_RECORD_SOURCE),
                "the model carries no preprocessing record; feeding raw pixels 0..255 "
                "(pass --preprocess unit|tf|torch|caffe, or --scale/--mean/--std, if it wants others; "
                f"{PROBE_HINT} tries each)")
    base = preset(choice.preset) if choice.preset else replace(PRESETS["raw"], name="custom", source="")
    explicit = {k: v for k, v in (("scale", choice.scale), ("mean", choice.mean), ("std", choice.std),
                                  ("channel_order", choice.channel_order), ("crop_fraction", choice.crop_fraction))
                if v is not None}
    flags = " ".join(f"--{k.replace('_', '-')} {_flag_value(v)}" for k, v in explicit.items())
    if explicit and not choice.preset:
        base = replace(base, **explicit, source=flags)
    elif explicit:
        base = replace(base, **explicit, name=f"{choice.preset}+custom", source=f"{base.source} {flags}")
    note = None
    if from_model is not None and _values(from_model) != _values(base):
        note = (f"the model's metadata says '{from_model.describe()}'; using {base.source} as asked "
                f"({base.describe()})")
    return base, note


def _flag_value(v: Any) -> str:
    return ",".join(f"{x:g}" for x in v) if isinstance(v, tuple) else (f"{v:g}" if isinstance(v, float) else str(v))


def _values(r: PreprocessRecord) -> tuple[Any, ...]:
    return (r.scale, r.mean, r.std, r.channel_order, r.crop_fraction)


def bind_to_model(record: PreprocessRecord, info: Any) -> PreprocessRecord:
    """Bind ``record`` to an :class:`~cnnkit.graph.info.OnnxModelInfo`'s input: size, channels, layout, dtype."""
    h, w, c = model_image_hwc(info)
    return record.bind(h, w, c, info.layout, info.input_dtype)


def model_image_hwc(info: Any) -> tuple[int, int, int]:
    """(height, width, channels) of a model's image input, whatever its layout."""
    if getattr(info, "input", None) is not None:
        return info.input.hwc  # onnx_info.ImageInput: the layout rule and the size, in one place
    shape = tuple(info.input_shape[1:])
    if len(shape) != 3:
        raise PreprocessError(f"{info.path}: input shape {list(info.input_shape)} is not an image tensor")
    if info.layout == "NCHW":
        c, h, w = shape
    else:
        h, w, c = shape
    return int(h), int(w), int(c)


def record_for_model(info: Any, choice: PreprocessChoice | None = None) -> tuple[PreprocessRecord, str | None]:
    """The bound record to feed the model ``info`` describes, and a line for the user (or ``None``)."""
    record, note = resolve_record(choice, info.metadata)
    return bind_to_model(record, info), note
