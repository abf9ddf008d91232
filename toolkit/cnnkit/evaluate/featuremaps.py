"""The activation maps of convolution layers for one input, read from the ONNX model's own tensors.

Bounded by default, so that a big model (MobileNetV2 has 52 convolutions, up to 960 channels) takes seconds:
at most ``DEFAULT_MAX_LAYERS`` layers, spread evenly from the first convolution to the last, and in each at
most ``DEFAULT_MAX_CHANNELS`` channels, the most varied ones (highest spatial standard deviation); the
result and the output say what was left out. Each grid is one image (one ``imshow``), not a subplot per
channel. ONNX convolutions are NCHW whatever the model's input layout, so every map is read as (C, H, W).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.io import check_output_dir, staged_dir, write_json_atomic
from cnnkit.graph.info import describe_onnx
from cnnkit.topk import top1

DEFAULT_MAX_LAYERS = 16
DEFAULT_MAX_CHANNELS = 32
_ACTIVATIONS = {"Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Clip", "HardSwish", "Gelu", "Softplus"}


@dataclass(frozen=True)
class FeatureMapLayer:
    layer: str
    tensor: str
    shape: tuple[int, ...]  # (channels, height, width)
    png: str
    channels_shown: tuple[int, ...] = ()  # which channels the grid shows, in grid order
    title: str = ""  # the grid's title: layer, its place among the convolution layers, maps and their size


@dataclass(frozen=True)
class FeatureMapsResult:
    model: str
    source: str  # what the input was
    predicted: int
    layers: tuple[FeatureMapLayer, ...]
    conv_layers_total: int = 0  # convolution layers in the model (``layers`` may be a subset)
    max_layers: int | None = None  # the bounds used; None: all
    max_channels: int | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)  # the record the image went through
    data: dict[str, Any] | None = None  # the dataset's provenance when the input came from one

    @property
    def selection_note(self) -> str | None:
        """What was left out, in words (None: every layer and channel is shown)."""
        parts = []
        if len(self.layers) < self.conv_layers_total:
            parts.append(f"{len(self.layers)} of {self.conv_layers_total} convolution layers (evenly spread)")
        cut = [x for x in self.layers if len(x.channels_shown) < x.shape[0]]
        if cut:
            parts.append(f"at most {self.max_channels} channels per layer, the most varied ({len(cut)} layer(s) cut)")
        return "; ".join(parts) + " (--max-layers 0 --max-channels 0 for all)" if parts else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_image(path: Path, record: Any) -> np.ndarray:
    """An image file of any size and mode as the model's pixels ``(H, W, C)`` uint8, fitted by the (bound) record."""
    from cnnkit.data.folders import BadImageError, open_image

    if not Path(path).is_file():
        raise CnnkitError(f"image {path} not found" if not Path(path).exists() else f"{path} is not a file",
                          hint="--image takes one image file (JPEG, PNG, ...)")
    try:
        return record.fit_image(open_image(Path(path)))
    except BadImageError as exc:
        raise CnnkitError(exc.message, hint="is it a complete JPEG or PNG file?") from None


def _layer_name(node_name: str) -> str:
    parts = node_name.split("/")
    if node_name.startswith("/") and len(parts) > 2:  # PyTorch: /features/features.0/Conv, /_blocks.1/_project_conv/Conv
        # The module path, each scope once: "features.0", "_blocks.1._project_conv" (the last scope alone,
        # "_project_conv", is the same in every block).
        path: list[str] = []
        for scope in parts[1:-1]:
            if path and scope.startswith(path[-1] + "."):
                path[-1] = scope
            else:
                path.append(scope)
        return ".".join(path)
    name = parts[1] if len(parts) > 2 else node_name  # tf2onnx: model/conv1/Conv2D
    return re.sub(r"_\d+$", "", name)


def conv_activation_tensors(model: Any) -> list[tuple[str, str]]:
    """``(layer, tensor)`` per Conv node: its activation's output if one follows it alone, else its own.
    Layer names are unique: a name that several nodes share is numbered (``name#1``, ``name#2``)."""
    from cnnkit.graph.index import GraphIndex

    index = GraphIndex.of(model)
    out = []
    for node in index.nodes:
        if node.op_type not in ("Conv", "QLinearConv", "ConvInteger"):
            continue
        tensor = node.output[0]
        users = index.consumers(tensor)
        if len(users) == 1 and users[0].op_type in _ACTIVATIONS:
            tensor = users[0].output[0]
        out.append((_layer_name(node.name) or tensor, tensor))
    counts = Counter(layer for layer, _ in out)
    seen: Counter[str] = Counter()
    numbered = []
    for layer, tensor in out:
        seen[layer] += 1
        numbered.append((f"{layer}#{seen[layer]}" if counts[layer] > 1 else layer, tensor))
    return numbered


def spread(n: int, k: int | None) -> list[int]:
    """``k`` indices out of ``range(n)``, evenly spread, first and last included (all when ``k`` is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    if k <= 1:
        return [n - 1] if k == 1 else []
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def mosaic(fmap: np.ndarray, channels: list[int], pad: int = 1) -> np.ndarray:
    """Tile ``fmap[channels]`` (each (H, W), scaled to 0..1 on its own) into one near-square image; NaN between."""
    h, w = fmap.shape[1:]
    cols = math.ceil(math.sqrt(len(channels)))
    rows = math.ceil(len(channels) / cols)
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), np.nan, np.float32)
    for k, c in enumerate(channels):
        m = fmap[c].astype(np.float32)
        lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
        m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        r, q = divmod(k, cols)
        out[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = m
    return out


def save_feature_maps(model_path: Path, image: np.ndarray, out_dir: Path, source: str, force: bool = False,
                      max_layers: int | None = DEFAULT_MAX_LAYERS, max_channels: int | None = DEFAULT_MAX_CHANNELS,
                      record: Any = None, provenance: dict[str, Any] | None = None) -> FeatureMapsResult:
    """Run ``image`` ((H, W, C) raw pixels, whatever the model's layout) through the model and save one PNG grid
    per convolution layer shown. ``max_layers``/``max_channels``: the bounds (None: all). ``record``: the bound
    preprocessing record (default: the model's own, else raw pixels). ``provenance``: where the image came from.
    ``out_dir`` is built beside itself and swapped in whole; an existing one is replaced only with ``force``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import onnx

    from cnnkit.graph.index import with_extra_outputs
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner

    for flag, value in (("--max-layers", max_layers), ("--max-channels", max_channels)):
        if value is not None and value < 0:
            raise CnnkitError(f"{flag} must be >= 0 (0: all), got {value}", hint=f"e.g. {flag} 0 to draw all")
    info = describe_onnx(model_path)
    if record is None:
        from cnnkit.data.preprocess import record_for_model

        record = record_for_model(info, None)[0]
    if tuple(image.shape) != (*record.size, record.channels):
        raise CnnkitError(f"the input is {tuple(image.shape)} (H, W, C), {model_path} takes "
                          f"{(*record.size, record.channels)}")
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    model = onnx.load(str(model_path))
    targets = conv_activation_tensors(model)
    if not targets:
        raise CnnkitError(f"{model_path} has no convolution layers",
                          hint="feature maps are drawn for Conv layers; cnnkit summary lists the model's layers")
    positions = spread(len(targets), max_layers)
    chosen = [targets[i] for i in positions]
    runner = create_runner(DEFAULT_RUNTIME, with_extra_outputs(model, [t for _, t in chosen]), label=model_path.name)
    values = runner.infer({runner.input_name: record.normalize(image[None])})
    from cnnkit.finite import NonFiniteError, nonfinite

    # NaN/Inf would be drawn as blank tiles and an argmax of NaN as class 0: refuse, naming the first such tensor.
    for what, tensor in [(f"layer {layer}", t) for layer, t in chosen] + [(f"output {runner.output_names[0]}",
                                                                           runner.output_names[0])]:
        bad = nonfinite(values[tensor])
        if bad is not None:
            raise NonFiniteError(f"{model_path}: {what} holds {bad.count} non-finite value(s) (NaN/Inf) for {source}; "
                                 f"no feature maps are written",
                                 hint="the model is broken for this input: check it with cnnkit eval or parity")
    layers = []
    with staged_dir(out_dir, force) as staging:  # the folder appears complete, or not at all
        for i, (position, (layer, tensor)) in enumerate(zip(positions, chosen, strict=True), 1):
            fmap = values[tensor][0]  # ONNX convolutions are NCHW: (C, H, W)
            if fmap.ndim != 3:
                continue  # a 1-D or 3-D convolution: no 2-D maps to draw
            channels = fmap.shape[0]
            if max_channels is not None and channels > max_channels:
                spread_ = fmap.reshape(channels, -1).astype(np.float64).std(axis=1)
                shown = sorted(int(c) for c in np.argsort(-spread_, kind="stable")[:max_channels])
            else:
                shown = list(range(channels))
            grid = mosaic(fmap, shown)
            fig = plt.figure(figsize=(max(3.0, grid.shape[1] / 40), max(3.0, grid.shape[0] / 40) + 0.5), dpi=80)
            ax = fig.add_axes((0.02, 0.02, 0.96, 0.86))
            ax.axis("off")
            ax.imshow(grid, cmap="viridis", interpolation="nearest")
            what = f"{len(shown)} of {channels} maps" if len(shown) < channels else f"{channels} maps"
            # The name, and where it sits: block names repeat across models' stages, positions do not.
            title = f"{layer} (conv layer {position + 1} of {len(targets)}): {what} of {fmap.shape[1]}x{fmap.shape[2]}"
            fig.suptitle(title, fontsize=9)
            name = f"{i:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', layer)}.png"
            try:
                fig.savefig(staging / name, dpi=80)
            finally:
                plt.close(fig)
            layers.append(FeatureMapLayer(layer, tensor, tuple(int(d) for d in fmap.shape), name, tuple(shown), title))
        probs = values[runner.output_names[0]]
        result = FeatureMapsResult(str(model_path), source, int(top1(np.reshape(probs, (1, -1)))[0]), tuple(layers), len(targets),
                                   max_layers, max_channels, record.to_dict(), provenance)
        write_json_atomic(staging / "featuremaps.json", result.to_dict() | {"selection": result.selection_note})
    return result


def feature_maps_from_dataset(model_path: Path, dataset: str | None, data_dir: Path | None, index: int,
                              record: Any) -> tuple[np.ndarray, str, Any]:
    """Test image ``index`` of a dataset (default: the one the model was trained on), or image ``index`` (sorted)
    of an image folder, fitted by ``record``; what it is; and the :class:`~cnnkit.data.sources.ImageSource`
    it came from (for its provenance and notice)."""
    from cnnkit.data.sources import open_images

    source = open_images(dataset, data_dir, "test", model=model_path)
    if not 0 <= index < len(source):
        raise CnnkitError(f"--index {index} is out of range: {source.provenance.get('source')} has {len(source)} images",
                          hint=f"pass --index 0..{len(source) - 1}, or --image FILE" if len(source) else "pass --image FILE")
    if source.folder is not None:
        label = int(source.labels[index])
        name = source.folder.root / source.folder.files[index]
        what = f"{name}" + (f" (label {source.class_names[label]})" if label >= 0 else "")
        from cnnkit.data.folders import BadImageError

        try:
            return source.folder.read(index, record), what, source
        except BadImageError as exc:
            raise CnnkitError(exc.message, hint="choose another --index") from None
    pixels, labels = source.subset([index]).load(record)
    return pixels[0], f"{source.name} test image {index} (label {int(labels[0])})", source
