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
