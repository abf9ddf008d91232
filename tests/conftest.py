"""Shared fixtures. Every test runs offline: no download is attempted unless a test asks for one."""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Session fixtures that train or export the seed CNN with TensorFlow: a test that uses one is an integration test.
TRAINING_FIXTURES = frozenset({"trained_model", "exported_model"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers tell the truth: a test that needs a trained model is marked ``integration`` whichever way it gets it,
    and tests that need the [train] extra are skipped, saying why, on the base install (``pip install cnnkit``)."""
    have = {name: importlib.util.find_spec(name) is not None for name in ("tensorflow", "sklearn")}
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        # $CNNKIT_TEST_SEED_CNN supplies the trained model (scripts/gpu_proof.sh on a machine without TensorFlow);
        # a test that still needs TensorFlow itself says so with importorskip.
        if item.get_closest_marker("integration") and not have["tensorflow"] and not os.environ.get("CNNKIT_TEST_SEED_CNN"):
            item.add_marker(pytest.mark.skip(reason="needs TensorFlow: pip install 'cnnkit[train]'"))
        elif item.get_closest_marker("digits") and not have["sklearn"]:
            item.add_marker(pytest.mark.skip(reason="needs scikit-learn's digits: pip install 'cnnkit[train]'"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.chdir(tmp_path)  # default outputs (models/<name>/) land in the test's folder, not the repo
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.getbasetemp() / "keras-home"))
    monkeypatch.delenv("CNNKIT_DATA_DIR", raising=False)
    monkeypatch.delenv("CNNKIT_DEBUG", raising=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip where it is absent."""
    if not (SHARED_DATA / "mnist-t10k-split").is_dir():
        pytest.skip("../shared/data is not here")
    return SHARED_DATA


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, gz: bool = True) -> Path:
    """Write ``array`` (uint8) in the IDX layout: big-endian magic, dims, then the bytes."""
    if magic is None:
        magic = 0x0800 | array.ndim
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def make_idx_dir(folder: Path, n_train: int = 40, n_test: int = 20, seed: int = 0, gz: bool = True) -> Path:
    """A small dataset folder in the standard MNIST layout (random pixels, labels 0..9)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz=gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8), gz=gz)
    return folder


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return make_idx_dir(tmp_path / "mnist")


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed CNN trained on the bundled digits (5 epochs, ~90 % test accuracy, seconds): ``<dir>/model.keras``.

    ``$CNNKIT_TEST_SEED_CNN``: a folder holding a seed CNN's model.keras and model.onnx made elsewhere by
    ``cnnkit train`` and ``cnnkit export``, used as they are (scripts/gpu_proof.sh: the GPU machine has no
    TensorFlow, and the gpu-marked tests need only the .onnx)."""
    prebuilt = os.environ.get("CNNKIT_TEST_SEED_CNN")
    if prebuilt:
        return Path(prebuilt).resolve() / "model.keras"
    os.environ["CNNKIT_OFFLINE"] = "1"
    from cnnkit.keras.train import TrainConfig, train_model

    out = tmp_path_factory.mktemp("seed-cnn")
    train_model(TrainConfig(dataset="digits", out_dir=out, epochs=5, seed=0))
    return out / "model.keras"


@pytest.fixture(scope="session")
def exported_model(trained_model: Path) -> Path:
    out = trained_model.with_name("model.onnx")
    if os.environ.get("CNNKIT_TEST_SEED_CNN") and out.is_file():
        return out
    from cnnkit.export.onnx import ExportConfig, export_onnx

    export_onnx(ExportConfig(trained_model, out))
    return out
