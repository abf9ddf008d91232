"""The activation maps of every convolution layer for one input, read from the ONNX model's own tensors."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.io import atomic_path, check_output_dir, write_json_atomic
from cnnkit.onnx_info import describe_onnx

_ACTIVATIONS = {"Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Clip", "HardSwish", "Gelu", "Softplus"}


@dataclass(frozen=True)
class FeatureMapLayer:
    layer: str
    tensor: str
    shape: tuple[int, ...]  # (channels, height, width)
    png: str


@dataclass(frozen=True)
class FeatureMapsResult:
    model: str
    source: str  # what the input was
    predicted: int
    layers: tuple[FeatureMapLayer, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_png(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A PNG as raw pixels ``(H, W, C)``; its size and mode must match the model's input."""
    from PIL import Image, UnidentifiedImageError

    h, w, c = shape
    try:
        with Image.open(path) as img:
            img.load()
            mode, size = img.mode, img.size
            want = {1: "L", 3: "RGB"}.get(c)
            if mode != want:
                raise CnnkitError(f"{path} is a {mode} image; the model takes {c}-channel images ({want})",
                                  hint=f"convert it first, e.g. PIL's Image.convert('{want}')")
            if size != (w, h):
                raise CnnkitError(f"{path} is {size[0]}x{size[1]} pixels; the model takes {w}x{h}",
                                  hint=f"resize it to {w}x{h} first")
            arr = np.asarray(img, dtype=np.float32)
    except FileNotFoundError:
        raise CnnkitError(f"image {path} not found") from None
    except UnidentifiedImageError:
        raise CnnkitError(f"{path} is not an image PIL can read") from None
    return arr.reshape(h, w, c)


def _layer_name(node_name: str) -> str:
    parts = node_name.split("/")
    name = parts[1] if len(parts) > 2 else node_name
    return re.sub(r"_\d+$", "", name)


def conv_activation_tensors(model: Any) -> list[tuple[str, str]]:
    """``(layer, tensor)`` per Conv node: its activation's output if one follows it alone, else its own."""
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "QLinearConv", "ConvInteger"):
            continue
        tensor = node.output[0]
        users = consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type in _ACTIVATIONS:
            tensor = users[0].output[0]
        out.append((_layer_name(node.name), tensor))
    return out


def save_feature_maps(model_path: Path, image: np.ndarray, out_dir: Path, source: str, force: bool = False) -> FeatureMapsResult:
    """Run ``image`` (H, W, C raw pixels) through the model and save one PNG grid per convolution layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import onnx

    from cnnkit.onnx_graph import with_extra_outputs
    from cnnkit.runners import OnnxRuntimeRunner

    info = describe_onnx(model_path)
    if tuple(image.shape) != info.image_shape:
        raise CnnkitError(f"the input is {image.shape}, {model_path} takes {info.image_shape}")
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    model = onnx.load(str(model_path))
    targets = conv_activation_tensors(model)
    if not targets:
        raise CnnkitError(f"{model_path} has no convolution layers")
    runner = OnnxRuntimeRunner(with_extra_outputs(model, [t for _, t in targets]), label=model_path.name)
    values = runner.infer({runner.input_name: image[None]})
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = []
    for i, (layer, tensor) in enumerate(targets, 1):
        fmap = values[tensor][0]  # ONNX convolutions are NCHW: (C, H, W)
        channels = fmap.shape[0]
        cols = math.ceil(math.sqrt(channels))
        rows = math.ceil(channels / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.5), squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.axis("off")
            if k < channels:
                ax.imshow(fmap[k], cmap="viridis")
        fig.suptitle(f"{layer}: {channels} maps of {fmap.shape[1]}x{fmap.shape[2]}", fontsize=10)
        name = f"{i:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', layer)}.png"
        with atomic_path(out_dir / name, force=True) as tmp:
            fig.savefig(tmp, dpi=80)
        plt.close(fig)
        layers.append(FeatureMapLayer(layer, tensor, tuple(int(d) for d in fmap.shape), name))
    probs = values[runner.output_names[0]]
    result = FeatureMapsResult(str(model_path), source, int(np.argmax(probs)), tuple(layers))
    write_json_atomic(out_dir / "featuremaps.json", result.to_dict(), force=True)
    return result


def feature_maps_from_dataset(model_path: Path, dataset: str | None, data_dir: Path | None, index: int) -> tuple[np.ndarray, str]:
    from cnnkit.datasets import load_dataset

    ds = load_dataset(dataset, data_dir, require_train=False)
    if not 0 <= index < len(ds.x_test):
        raise CnnkitError(f"--index {index} is out of range: {ds.name.value} has {len(ds.x_test)} test images")
    return ds.x_test[index].astype(np.float32), f"{ds.name.value} test image {index} (label {int(ds.y_test[index])})"
