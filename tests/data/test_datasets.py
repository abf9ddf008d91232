import gzip
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from cnnkit.data import datasets
from cnnkit.data.datasets import DatasetName, load_dataset
from cnnkit.errors import DatasetError
from tests.conftest import make_idx_dir, write_idx


def test_idx_dir_loads_gz_and_raw(tmp_path: Path) -> None:
    for gz in (True, False):
        folder = make_idx_dir(tmp_path / str(gz), n_train=30, n_test=12, gz=gz)
        ds = load_dataset("mnist", folder)
        assert ds.x_train.shape == (30, 28, 28, 1) and ds.x_train.dtype == np.uint8
        assert ds.x_test.shape == (12, 28, 28, 1) and ds.y_test.dtype == np.int64
        assert ds.class_names == tuple("0123456789")


def test_npz_file_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    f = tmp_path / "data.npz"
    np.savez(f, x_train=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), y_train=np.arange(8) % 10,
             x_test=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), y_test=np.arange(4))
    ds = load_dataset("fashion_mnist", f)
    assert ds.x_train.shape == (8, 28, 28, 1) and ds.class_names[0] == "T-shirt/top"


def _corrupt(folder: Path, what: str) -> Path:
    images = folder / "train-images-idx3-ubyte.gz"
    if what == "truncated":
        raw = gzip.decompress(images.read_bytes())
        images.write_bytes(gzip.compress(raw[:-100]))
    elif what == "magic":
        images.unlink()
        write_idx(folder / "train-images-idx3-ubyte", np.zeros((40, 28, 28), np.uint8), magic=0x0801)
    elif what == "counts":
        (folder / "train-labels-idx1-ubyte.gz").unlink()
        write_idx(folder / "train-labels-idx1-ubyte", np.zeros(39, np.uint8))
    elif what == "shape":
        images.unlink()
        write_idx(folder / "train-images-idx3-ubyte", np.zeros((40, 32, 32), np.uint8))
    elif what == "missing":
        images.unlink()
    elif what == "not-gzip":
        images.write_bytes(b"this is not gzip")
    return images


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("truncated", "truncated"),
        ("magic", "wrong magic number 0x00000801"),
        ("counts", "40 train images but 39 labels"),
        ("shape", "shape (32, 32, 1)"),
        ("missing", "has no train-images-idx3-ubyte[.gz]"),
        ("not-gzip", "cannot read"),
    ],
)
def test_bad_idx_files_give_one_line_errors(idx_dir: Path, what: str, message: str) -> None:
    _corrupt(idx_dir, what)
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", idx_dir)
    line = info.value.one_line()
    assert message in line and "\n" not in line
    assert str(idx_dir) in line


def test_npz_missing_key(tmp_path: Path) -> None:
    f = tmp_path / "d.npz"
    np.savez(f, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2))
    with pytest.raises(DatasetError, match=r"d\.npz: missing key\(s\) x_test, y_test"):
        load_dataset("mnist", f)


def test_labels_out_of_range(tmp_path: Path) -> None:
    folder = make_idx_dir(tmp_path / "m")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    write_idx(folder / "t10k-labels-idx1-ubyte", np.full(20, 12, np.uint8))
    with pytest.raises(DatasetError, match="labels outside 0..9"):
        load_dataset("mnist", folder)


def test_unknown_dataset_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nowhere")


@pytest.mark.digits
def test_digits_works_offline_and_looks_like_mnist() -> None:
    ds = load_dataset("digits")
    assert ds.name is DatasetName.DIGITS
    assert ds.x_train.shape[1:] == (28, 28, 1) and ds.x_train.dtype == np.uint8
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert ds.x_train.max() == 255 and ds.x_train[:, :4].max() == 0  # centred, MNIST-like border
    assert set(np.unique(ds.y_train)) == set(range(10))


def test_default_falls_back_to_the_shipped_mnist_digits_with_a_notice() -> None:
    ds = load_dataset(None)
    assert ds.name is DatasetName.MNIST and "shipped with cnnkit" in ds.source
    assert (len(ds.x_train), len(ds.x_test)) == (8000, 2000) and ds.x_train.shape[1:] == (28, 28, 1)
    assert ds.notice and "full MNIST cannot be had" in ds.notice and "8,000 train / 2,000 held out" in ds.notice
    assert set(np.unique(ds.y_test)) == set(range(10))
    assert load_dataset("mnist").notice == ds.notice  # named explicitly: the same real digits, said the same way


def test_shipped_mnist_files_are_the_published_ones() -> None:
    import hashlib

    folder = datasets.shipped_mnist_dir()
    assert folder is not None and (folder / "README.md").is_file()
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.glob("*.gz")}
    assert md5 == {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                   "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}


@pytest.mark.shared_data
def test_shipped_split_is_the_shared_split(shared_data: Path) -> None:
    shipped, shared = load_dataset(None), load_dataset("mnist", shared_data / "mnist-t10k-split")
    np.testing.assert_array_equal(shipped.x_train, shared.x_train)
    np.testing.assert_array_equal(shipped.y_test, shared.y_test)


@pytest.mark.digits
def test_without_the_shipped_files_the_default_is_digits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(datasets, "SHIPPED_MNIST", tmp_path / "missing")
    ds = load_dataset(None)
    assert ds.name is DatasetName.DIGITS and "MNIST is not available" in ds.notice and "--data-dir" in ds.notice
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist")
    assert "--data-dir" in info.value.one_line()


def test_data_dir_env_is_the_default(monkeypatch: pytest.MonkeyPatch, idx_dir: Path) -> None:
    monkeypatch.setenv("CNNKIT_DATA_DIR", str(idx_dir))
    assert load_dataset(None).name is DatasetName.MNIST


def test_keras_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    z = np.zeros((3, 28, 28), np.uint8)
    np.savez(tmp_path / "datasets" / "mnist.npz", x_train=z, y_train=np.zeros(3), x_test=z, y_test=np.zeros(3))
    assert len(load_dataset("mnist").x_train) == 3


def test_download_attempt_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts but never answers must not hang the loader."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    monkeypatch.setattr(datasets, "_KERAS_BASE", f"http://127.0.0.1:{server.getsockname()[1]}/")
    started = time.monotonic()
    try:
        ds = load_dataset("mnist", allow_download=True, timeout_s=1.0)
    finally:
        server.close()
    assert time.monotonic() - started < 5
    assert "shipped with cnnkit" in ds.source and "download" in ds.notice  # the failed download, said in the notice


@pytest.mark.shared_data
def test_real_mnist_test_set(shared_data: Path) -> None:
    import hashlib

    folder = shared_data / "mnist"
    assert hashlib.md5((folder / "t10k-images-idx3-ubyte.gz").read_bytes()).hexdigest() == "9fb629c4189551a2d022fa330f9573f3"
    split = load_dataset("mnist", shared_data / "mnist-t10k-split")
    assert (len(split.x_train), len(split.x_test)) == (8000, 2000)
    assert np.bincount(split.y_test, minlength=10).min() > 150


def test_test_only_folder_for_evaluation(tmp_path: Path) -> None:
    folder = make_idx_dir(tmp_path / "m")
    for stem in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (folder / stem).unlink()
    with pytest.raises(DatasetError, match="has no train-images"):
        load_dataset("mnist", folder)
    ds = load_dataset("mnist", folder, require_train=False)
    assert len(ds.x_train) == 0 and ds.x_test.shape == (20, 28, 28, 1)


def test_data_dir_that_is_some_other_file(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(DatasetError, match="notes.txt is neither a folder nor an .npz file"):
        load_dataset("mnist", f)
