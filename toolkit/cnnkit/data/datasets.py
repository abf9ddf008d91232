"""Image classification datasets as uint8 NHWC arrays of raw pixels (0..255).

* ``mnist`` / ``fashion_mnist``: from a data dir with the standard IDX files (gzipped or not) or an
  ``.npz`` with ``x_train, y_train, x_test, y_test``; else from Keras' cache (``$KERAS_HOME/datasets``,
  default ``~/.keras/datasets``); else downloaded into that cache, within a bounded time.
* the offline fallback for MNIST: the real MNIST test set shipped in the package (``cnnkit/data/mnist-t10k``,
  10,000 digits), split with a fixed seed into 8,000 training and 2,000 held-out images.
* ``digits``: scikit-learn's bundled 8x8 digits, resized to 28x28 and rescaled to 0..255; needs no network.

No TensorFlow is needed to load any of them. Every result that used data records
:meth:`Dataset.provenance`: name, where from, SHA-256 of the files read and of the arrays, split sizes.
A command given a cnnkit model uses the dataset its metadata names (:func:`load_dataset_for_model`); another
one only when asked by name, and the command says so.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import threading
import urllib.request
import zlib
from dataclasses import dataclass, replace
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import DatasetError
from cnnkit.finite import nonfinite
from cnnkit.io import sha256_file, write_bytes_atomic

DATA_DIR_ENV = "CNNKIT_DATA_DIR"
OFFLINE_ENV = "CNNKIT_OFFLINE"
DOWNLOAD_TIMEOUT_S = 20.0

_KERAS_BASE = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE_IMAGES, _IDX_UBYTE_LABELS = 0x0803, 0x0801


class DatasetName(str, Enum):
    MNIST = "mnist"
    FASHION_MNIST = "fashion_mnist"
    DIGITS = "digits"


CLASS_NAMES: dict[DatasetName, tuple[str, ...]] = {
    DatasetName.MNIST: tuple(str(i) for i in range(10)),
    DatasetName.DIGITS: tuple(str(i) for i in range(10)),
    DatasetName.FASHION_MNIST: (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}
IMAGE_SHAPE = (28, 28, 1)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset. Images are uint8 ``(N, H, W, C)``, labels int64 ``(N,)``."""

    name: DatasetName
    source: str  # where it was read from, for reports
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    notice: str | None = None  # a line the user should see (e.g. why we fell back to digits)
    files: tuple[str, ...] = ()  # the files the arrays were read from

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def describe(self) -> dict[str, object]:
        """What a result records about its data: :meth:`provenance` plus shape and class count."""
        return self.provenance() | {"image_shape": list(self.image_shape), "classes": len(self.class_names)}

    def provenance(self) -> dict[str, Any]:
        """Which data exactly: name, source, SHA-256 per file read, of the arrays as used, and the split sizes."""
        return {
            "name": self.name.value,
            "source": self.source,
            "files": dict(self._file_hashes),
            "content_sha256": self._content_hash,
            "train_samples": int(len(self.x_train)),
            "test_samples": int(len(self.x_test)),
        } | ({"notice": self.notice} if self.notice else {})

    @cached_property
    def _file_hashes(self) -> dict[str, str]:
        return {f: sha256_file(f) for f in self.files}

    @cached_property
    def _content_hash(self) -> str:
        digest = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(f"{a.dtype}{a.shape}".encode())
            digest.update(np.ascontiguousarray(a).data)
        return digest.hexdigest()

    def limited(self, train: int | None = None, test: int | None = None) -> Dataset:
        """The first ``train``/``test`` samples (None: all), for quick runs."""
        return Dataset(
            self.name, self.source,
            self.x_train[:train], self.y_train[:train], self.x_test[:test], self.y_test[:test],
            self.class_names, self.notice, self.files,
        )


def default_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


def load_dataset(
    name: DatasetName | str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    allow_download: bool | None = None,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
    require_train: bool = True,
) -> Dataset:
    """Load a dataset by name; ``None`` means MNIST where it can be had, else ``digits`` (with a notice).

    The fallback to ``digits`` happens only when no data dir is given; given files must load.
    ``require_train=False`` accepts a folder with only the test files (for parity and evaluation).

    ``data_dir`` defaults to ``$CNNKIT_DATA_DIR``. Downloads are allowed unless ``$CNNKIT_OFFLINE`` is set.
    """
    if allow_download is None:
        allow_download = os.environ.get(OFFLINE_ENV, "") in ("", "0")
    dir_path = Path(data_dir) if data_dir is not None else default_data_dir()
    if name is None and dir_path is not None:
        name = DatasetName.MNIST  # files the user pointed at must load, or fail loudly: no fallback
    if name is not None:
        try:
            name = DatasetName(name)
        except ValueError:
            known = ", ".join(d.value for d in DatasetName)
            raise DatasetError(f"unknown dataset '{name}'", hint=f"choose one of {known}") from None
    if name in (None, DatasetName.MNIST) and dir_path is None:
        try:
            return _load_named(DatasetName.MNIST, dir_path, allow_download, timeout_s, require_train)
        except DatasetError as exc:
            if shipped_mnist_dir() is None:
                if name is not None:
                    raise
                ds = _load_digits()
                return replace(ds, notice=f"MNIST is not available ({exc.message}); using scikit-learn's bundled "
                                          f"digits instead (pass --data-dir with the MNIST files for real MNIST)")
            ds = load_shipped_mnist()
            return replace(ds, notice=(f"the full MNIST cannot be had ({exc.message}); using the 10,000 real MNIST "
                                       f"test digits shipped with cnnkit, split {len(ds.x_train):,} train / "
                                       f"{len(ds.x_test):,} held out (seed {SHIPPED_SPLIT_SEED})"))
    return _load_named(name, dir_path, allow_download, timeout_s, require_train)


SHIPPED_MNIST = Path(__file__).resolve().parent / "mnist-t10k"
SHIPPED_SPLIT_SEED, SHIPPED_TRAIN = 0, 8000


def shipped_mnist_dir() -> Path | None:
    """The MNIST test set shipped in the package (see its README), or None where it is missing."""
    ok = all((SHIPPED_MNIST / f"{_IDX_FILES[k]}.gz").is_file() for k in ("x_test", "y_test"))
    return SHIPPED_MNIST if ok else None


def load_shipped_mnist() -> Dataset:
    """The shipped 10,000 MNIST test digits, permuted with ``default_rng(0)``: the first 8,000 train, the last
    2,000 held out (the split of ``../shared/data/mnist-t10k-split``)."""
    folder = SHIPPED_MNIST
    x = _read_idx(folder / f"{_IDX_FILES['x_test']}.gz", images=True)
    y = _read_idx(folder / f"{_IDX_FILES['y_test']}.gz", images=False)
    order = np.random.default_rng(SHIPPED_SPLIT_SEED).permutation(len(x))
    train, test = order[:SHIPPED_TRAIN], order[SHIPPED_TRAIN:]
    arrays = {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}
    source = (f"MNIST test set shipped with cnnkit ({folder}), split {SHIPPED_TRAIN:,}/{len(x) - SHIPPED_TRAIN:,} "
              f"with seed {SHIPPED_SPLIT_SEED}")
    return _make_dataset(DatasetName.MNIST, source, arrays,
                         files=tuple(str(folder / f"{_IDX_FILES[k]}.gz") for k in ("x_test", "y_test")))


def model_dataset(model: str | os.PathLike[str]) -> str | None:
    """The dataset a cnnkit model was trained on: ``dataset`` in an ONNX model's metadata, or the
    ``train.json`` beside a ``.keras`` model; None when the model does not say."""
    path = Path(model)
    name: object = None
    if path.suffix == ".onnx":
        from cnnkit.graph.info import describe_onnx

        from cnnkit.graph import metadata as meta

        name = meta.dataset(describe_onnx(path, require_image=False).metadata)
    else:
        from cnnkit.results.load import train_record_beside

        record = train_record_beside(path)
        name = record.dataset.get("name") if record else None
    return name if isinstance(name, str) and name not in ("", "unknown") else None


def load_dataset_for_model(
    model: str | os.PathLike[str],
    name: DatasetName | str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Dataset:
    """The data to run ``model`` on: ``name`` if given, else the dataset the model's metadata names.

    No silent switch: when the model names a dataset that cannot be loaded, that is an error (not a fallback
    to digits); a dataset other than the model's is used only when named, and the returned dataset's
    ``notice`` says so. A data dir names the data too (a digits model is then run on its files, said in the
    notice). A model that names no dataset gets :func:`load_dataset`'s default (with its notice).
    """
    trained_on = model_dataset(model)
    label = Path(model).name
    known = {d.value for d in DatasetName}
    where = Path(data_dir) if data_dir is not None else default_data_dir()
    # Files the user points at name the data; only digits (bundled, never in a data dir) cannot come from them.
    if name is None and trained_on in known and not (where is not None and trained_on == DatasetName.DIGITS.value):
        try:
            return load_dataset(trained_on, data_dir, **kwargs)
        except DatasetError as exc:
            if where is not None:
                raise  # the files the user pointed at are broken: that error says it all
            raise DatasetError(
                f"{label} was trained on {trained_on}, which cannot be loaded: {exc.message}",
                hint=f"{exc.hint or 'pass --data-dir with its files'}; or pass --dataset NAME to use another dataset",
            ) from None
    dataset = load_dataset(name, data_dir, **kwargs)
    if trained_on is not None and dataset.name.value != trained_on:
        asked = (f"as asked (--dataset {dataset.name.value})" if name is not None
                 else f"from {where}" if where is not None else "(the default)")
        note = f"using {dataset.name.value} {asked}; {label} was trained on {trained_on}"
        dataset = replace(dataset, notice=f"{dataset.notice}; {note}" if dataset.notice else note)
    return dataset


def _load_named(
    name: DatasetName, data_dir: Path | None, allow_download: bool, timeout_s: float, require_train: bool = True
) -> Dataset:
    if name is DatasetName.DIGITS:
        return _load_digits()
    if data_dir is not None:
        return _load_from_dir(name, data_dir, require_train)
    cached = _keras_cache_dir()
    found = _find_in_cache(name, cached)
    if found is not None:
        return _load_from_dir(name, found)
    if not allow_download:
        raise DatasetError(
            f"cannot load {name.value}: no --data-dir given, not in Keras' cache {cached}, and downloads are off (${OFFLINE_ENV})",
            hint="pass --data-dir DIR with the IDX files or an .npz",
        )
    try:
        _download(name, cached, timeout_s)
    except DatasetError as exc:
        raise DatasetError(
            f"cannot load {name.value}: no --data-dir given, not in Keras' cache {cached}, and {exc.message}",
            hint="pass --data-dir DIR with the IDX files or an .npz (or set $CNNKIT_DATA_DIR)",
        ) from None
    found = _find_in_cache(name, cached)
    assert found is not None
    return _load_from_dir(name, found)


# --- files ---------------------------------------------------------------------------------------


def _load_from_dir(name: DatasetName, path: Path, require_train: bool = True) -> Dataset:
    if path.is_file() and path.suffix == ".npz":
        return _load_npz(name, path)
    if not path.exists():
        raise DatasetError(f"data dir {path} does not exist", hint="pass --data-dir with the IDX files or an .npz file")
    if not os.access(path, os.R_OK):
        raise DatasetError(f"cannot read data dir {path}: permission denied", hint=f"check its permissions (ls -ld {path})")
    if not path.is_dir():
        raise DatasetError(f"{path} is neither a folder nor an .npz file", hint="pass --data-dir with the IDX files or an .npz file")
    npz = path / f"{name.value}.npz"
    if npz.is_file() and not any(_idx_path(path, stem) for stem in _IDX_FILES.values()):
        return _load_npz(name, npz)
    arrays = {}
    files = []
    test_only = not require_train and _idx_path(path, _IDX_FILES["x_train"]) is None
    for key, stem in _IDX_FILES.items():
        file = _idx_path(path, stem)
        if test_only and key.endswith("_train"):
            arrays[key] = np.zeros((0, *IMAGE_SHAPE[:2]) if key == "x_train" else (0,), np.uint8)
            continue
        if file is None:
            raise DatasetError(
                f"{path} has no {stem}[.gz] for {name.value}",
                hint=f"--data-dir needs {', '.join(_IDX_FILES.values())} (gzipped or not), or {name.value}.npz",
            )
        arrays[key] = _read_idx(file, images=key.startswith("x"))
        files.append(str(file))
    return _make_dataset(name, str(path), arrays, allow_empty_train=test_only, files=tuple(files))


def _idx_path(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, images: bool) -> np.ndarray:
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    expected_magic, ndim = (_IDX_UBYTE_IMAGES, 3) if images else (_IDX_UBYTE_LABELS, 1)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated header ({len(raw)} bytes)", hint="re-download the file")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        what = "images" if images else "labels"
        raise DatasetError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x} for IDX {what}",
            hint="is this the right file?",
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(dims))
    if len(raw) - header < size:
        raise DatasetError(
            f"{path}: truncated: header says {'x'.join(map(str, dims))} = {size} bytes, file has {len(raw) - header}",
            hint="re-download the file",
        )
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=header).reshape(dims)


def _load_npz(name: DatasetName, path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _IDX_FILES if k not in data.files]
            if missing:
                raise DatasetError(
                    f"{path}: missing key(s) {', '.join(missing)}",
                    hint="the .npz needs x_train, y_train, x_test, y_test",
                )
            arrays = {k: np.asarray(data[k]) for k in _IDX_FILES}
    except DatasetError:
        raise
    except (OSError, ValueError, zlib.error, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npz ({exc})") from None
    return _make_dataset(name, str(path), arrays, files=(str(path),))


def _make_dataset(
    name: DatasetName, source: str, arrays: dict[str, np.ndarray], allow_empty_train: bool = False,
    files: tuple[str, ...] = (),
) -> Dataset:
    n_classes = len(CLASS_NAMES[name])
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"].reshape(-1)
        for key, a in ((f"x_{split}", x), (f"y_{split}", y)):
            if a.dtype.kind not in "biuf":
                raise DatasetError(f"{source}: {key} holds {a.dtype} values, not numbers",
                                   hint="pixels as uint8 0..255 and labels as integers")
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[1:] != IMAGE_SHAPE:
            raise DatasetError(
                f"{source}: {split} images have shape {tuple(x.shape[1:])}, expected {IMAGE_SHAPE[:2]} for {name.value}"
            )
        if len(x) != len(y):
            raise DatasetError(f"{source}: {len(x)} {split} images but {len(y)} labels")
        if len(x) == 0 and (split == "test" or not allow_empty_train):
            raise DatasetError(f"{source}: the {split} split is empty")
        for what, arr in (("pixel", x), ("label", y)):
            bad = nonfinite(arr)  # a NaN pixel would otherwise become 0 in the cast below
            if bad is not None:
                raise DatasetError(f"{source}: {split} data holds {bad.describe(what, 'image')}",
                                   hint="clean the file: pixels must be numbers 0..255")
        if x.dtype != np.uint8:
            if len(x) and (x.min() < 0 or x.max() > 255):
                raise DatasetError(f"{source}: {split} pixels outside 0..255 (raw pixels expected)")
            x = x.astype(np.uint8)
        y = y.astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise DatasetError(f"{source}: {split} labels outside 0..{n_classes - 1}")
        out[f"x_{split}"], out[f"y_{split}"] = np.ascontiguousarray(x), y
    return Dataset(name, source, out["x_train"], out["y_train"], out["x_test"], out["y_test"], CLASS_NAMES[name],
                   files=files)


# --- Keras cache and download ----------------------------------------------------------------------


def _keras_cache_dir() -> Path:
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "datasets"


def _find_in_cache(name: DatasetName, cache: Path) -> Path | None:
    if name is DatasetName.MNIST:
        npz = cache / "mnist.npz"
        return npz if npz.is_file() else None
    folder = cache / "fashion-mnist"
    return folder if all(_idx_path(folder, s) for s in _IDX_FILES.values()) else None


def _fetch(url: str, timeout_s: float) -> bytes:
    """GET ``url`` within ``timeout_s`` overall; DNS stalls included (a thread bounds them)."""
    result: dict[str, object] = {}

    def worker() -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (fixed https URL)
                result["data"] = resp.read()
        except Exception as exc:  # noqa: BLE001 (reported below)
            result["error"] = exc

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "data" in result:
        return result["data"]  # type: ignore[return-value]
    error = result.get("error")
    reason = getattr(error, "reason", error) if error is not None else f"no answer within {timeout_s:.0f} s"
    raise DatasetError(f"download of {url} failed ({reason})", hint="pass --data-dir with the dataset files")


def _download(name: DatasetName, cache: Path, timeout_s: float) -> None:
    if name is DatasetName.MNIST:
        data = _fetch(_KERAS_BASE + "mnist.npz", timeout_s)
        digest = hashlib.sha256(data).hexdigest()
        if digest != _MNIST_NPZ_SHA256:
            raise DatasetError(f"downloaded mnist.npz has SHA-256 {digest}, expected {_MNIST_NPZ_SHA256}")
        cache.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(cache / "mnist.npz", data)
        return
    files = {f"{s}.gz": _fetch(_KERAS_BASE + f"{s}.gz", timeout_s) for s in _IDX_FILES.values()}
    (cache / "fashion-mnist").mkdir(parents=True, exist_ok=True)
    for fname, data in files.items():
        write_bytes_atomic(cache / "fashion-mnist" / fname, data)


# --- digits ---------------------------------------------------------------------------------------


def _load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, laid out like MNIST: resized to 20x20, centred in 28x28, 0..255."""
    from cnnkit._deps import require_sklearn_datasets

    digits = require_sklearn_datasets().load_digits()
    images = digits.images.astype(np.float32) / 16.0  # sklearn's values are 0..16
    resized = _resize_bilinear(images, 20, 20)
    canvas = np.zeros((len(images), 28, 28), dtype=np.float32)
    canvas[:, 4:24, 4:24] = resized
    x = np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    bundled = Path(require_sklearn_datasets().__file__).parent / "data" / "digits.csv.gz"
    return Dataset(
        DatasetName.DIGITS, "scikit-learn load_digits (bundled)",
        x[train], y[train], x[test], y[test], CLASS_NAMES[DatasetName.DIGITS],
        files=(str(bundled),) if bundled.is_file() else (),
    )


def _resize_bilinear(images: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of a stack ``(N, H, W)``, pixel centres aligned (as PIL and OpenCV do)."""
    _, h, w = images.shape
    ys = np.clip((np.arange(out_h) + 0.5) * h / out_h - 0.5, 0, h - 1)
    xs = np.clip((np.arange(out_w) + 0.5) * w / out_w - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[None, :, None], (xs - x0)[None, None, :]
    top = images[:, y0][:, :, x0] * (1 - wx) + images[:, y0][:, :, x1] * wx
    bottom = images[:, y1][:, :, x0] * (1 - wx) + images[:, y1][:, :, x1] * wx
    return top * (1 - wy) + bottom * wy
