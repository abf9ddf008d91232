"""Test helpers: tiny ONNX image classifiers built with onnx.helper, and image folders of real MNIST digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_classifier(path: Path, layout: str = "NCHW", size: tuple[int, int] = (32, 32), channels: int = 3,
                    classes: int = 10, batch: int | str = "batch", seed: int = 0, metadata: dict | None = None) -> Path:
    """A real conv classifier (Conv 3x3 -> Relu -> GlobalAveragePool -> Gemm -> Softmax), seeded weights.

    ``layout`` NHWC adds a Transpose in front, as TensorFlow exports do.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    h, w = size
    filters = 16
    conv_w = rng.normal(0, 0.5, (filters, channels, 3, 3)).astype(np.float32)
    conv_b = rng.normal(0, 0.1, filters).astype(np.float32)
    dense_w = rng.normal(0, 1.0, (filters, classes)).astype(np.float32)
    dense_b = np.zeros(classes, np.float32)
    nodes, x = [], "images"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [
        helper.make_node("Conv", [x, "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "dense_w", "dense_b"], ["logits"], name="dense"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    shape = [batch, channels, h, w] if layout == "NCHW" else [batch, h, w, channels]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(conv_w, "conv_w"), numpy_helper.from_array(conv_b, "conv_b"),
         numpy_helper.from_array(dense_w, "dense_w"), numpy_helper.from_array(dense_b, "dense_b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mnist_digits(n: int, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` real MNIST digits (the shipped test set's split), uint8 (n, 28, 28), labels."""
    from cnnkit.data.datasets import load_shipped_mnist

    ds = load_shipped_mnist()
    x, y = (ds.x_test, ds.y_test) if split == "test" else (ds.x_train, ds.y_train)
    return x[:n, ..., 0], y[:n]


def write_digit_folder(root: Path, n: int = 60, size: int | None = None, rgb: bool = False, labelled: bool = True,
                       split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST digits as PNGs, in class subfolders ``0``..``9`` (or flat), resized and RGB if asked.

    Returns the pixels as written (n, H, W[, 3]) and the labels, in the folder's sorted file order.
    """
    from PIL import Image

    x, y = mnist_digits(n, split)
    written = []
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        pil = Image.fromarray(img, "L")
        if size is not None:
            pil = pil.resize((size, size), Image.Resampling.BILINEAR)
        if rgb:
            pil = pil.convert("RGB")
        folder = root / str(int(label)) if labelled else root
        folder.mkdir(parents=True, exist_ok=True)
        pil.save(folder / f"{i:05d}.png")
        written.append((f"{int(label)}/{i:05d}" if labelled else f"{i:05d}", np.asarray(pil), int(label)))
    written.sort(key=lambda t: t[0])
    return np.stack([w[1] for w in written]), np.asarray([w[2] for w in written], np.int64)


def colour_keyed_classifier(path: Path, keys: dict[int, tuple[int, int, int]], classes: int = 1000,
                            size: int = 16) -> Path:
    """An NHWC float32 classifier (pixels 0..255) of ``classes`` classes that knows colours: class ``i`` of
    ``keys`` scores highest for an image of the RGB colour ``keys[i]`` (the score is minus the squared distance
    of the image's mean colour to the key), every other class far below. A stand-in for an ImageNet model that
    is right about the images it was trained on."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # -|m - k|^2 = 2 m.k - |k|^2 - |m|^2: the last term is the same for every class and left out.
    weights = np.zeros((3, classes), np.float32)
    bias = np.full(classes, -1e6, np.float32)
    for cls, key in keys.items():
        k = np.asarray(key, np.float32)
        weights[:, cls] = 2 * k
        bias[cls] = -float(k @ k)
    nodes = [helper.make_node("ReduceMean", ["image", "hw"], ["mean"], keepdims=0, name="mean_colour"),
             helper.make_node("Gemm", ["mean", "w", "b"], ["scores"], name="keys")]
    graph = helper.make_graph(
        nodes, "colour_keys", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(np.array([1, 2], np.int64), "hw"), numpy_helper.from_array(weights, "w"),
         numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_colour_folder(root: Path, folders: dict[str, list[tuple[int, int, int]]], size: int = 16) -> Path:
    """PNG images of one colour each, in class folders: ``{"281": [(255, 0, 0), ...], ...}``."""
    from PIL import Image

    for name, colours in folders.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", (size, size), colour).save(root / name / f"{i:03d}.png")
    return root
