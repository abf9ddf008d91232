"""Image folders: class subfolders or unlabelled images, decoded with Pillow in batches; bad files named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnkit.data.folders import BadImageError, SkippedImages, is_image_folder, read_labels_file, scan_image_folder
from cnnkit.data.preprocess import PRESETS
from cnnkit.data.sources import open_folder, open_images
from cnnkit.errors import DatasetError
from tests.conftest import make_idx_dir


def write_class_folder(root: Path, per_class: int = 3, classes: tuple[str, ...] = ("cat", "dog", "eel"),
                       size: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """PNGs (RGB, lossless) in class subfolders; returns each file's pixels by relative path."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = {}
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size, size + 2, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"{i:03d}.png")
            pixels[f"{name}/{i:03d}.png"] = arr
    return pixels


def test_class_subfolders_label_by_sorted_name_and_decode_losslessly(tmp_path: Path) -> None:
    pixels = write_class_folder(tmp_path / "imgs", classes=("dog", "cat", "eel"))
    folder = scan_image_folder(tmp_path / "imgs")
    assert folder.class_names == ("cat", "dog", "eel") and folder.labels_from == "sorted folder names"
    assert folder.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    record = PRESETS["raw"].bind(12, 14, 3, "NHWC", "float32")
    batches = list(folder.batches(record, 4))
    assert [len(x) for x, _ in batches] == [4, 4, 1]
    x = np.concatenate([b[0] for b in batches])
    np.testing.assert_array_equal(x[0], pixels["cat/000.png"])
    described = folder.describe()
    assert described["images_per_class"] == {"cat": 3, "dog": 3, "eel": 3} and len(described["fingerprint"]) == 64
    assert folder.subset([0, 1]).fingerprint() != folder.fingerprint() == scan_image_folder(tmp_path / "imgs").fingerprint()


def test_model_class_names_and_labels_file(tmp_path: Path) -> None:
    write_class_folder(tmp_path / "imgs", per_class=1, classes=("cat", "dog"))
    folder = open_folder(tmp_path / "imgs", ("eel", "dog", "cat"), "labels file x", strict_names=True)
    assert folder.labels.tolist() == [2, 1] and folder.class_names == ("eel", "dog", "cat")
    with pytest.raises(DatasetError, match="not among the model's 2 class names"):
        open_folder(tmp_path / "imgs", ("cat", "emu"), "labels file x", strict_names=True)
    # A model whose class names are just indices: the folders keep their sorted order.
    assert open_folder(tmp_path / "imgs", ("0", "1"), "metadata", strict_names=False).class_names == ("cat", "dog")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\n")
    assert read_labels_file(labels) == ("cat", "dog")
    labels.write_text("cat\n\ndog\n")
    with pytest.raises(DatasetError, match="line 2 is blank"):
        read_labels_file(labels)


def test_numbered_class_folders_are_class_indices_of_the_model(tmp_path: Path) -> None:
    """ImageNet-style folders (281/, 967/) for a 1000-class model are its class indices, said in one line; a
    folder count that is not the model's class count is warned about; names the model knows still win."""
    write_class_folder(tmp_path / "imagenet", per_class=2, classes=("281", "967"))
    folder = open_folder(tmp_path / "imagenet", None, "", strict_names=False, model_classes=1000)
    assert folder.labels.tolist() == [281, 281, 967, 967] and len(folder.class_names) == 1000
    assert folder.labels_from == "folder names as class indices (0..999)"
    assert "281/, 967/ read as class indices of the model's 1000 classes" in folder.notice
    assert folder.describe()["images_per_class"] == {"281": 2, "967": 2} and "notice" in folder.describe()
    # The same folders labelled the way they were before: 0 and 1, with a warning now.
    unknown = open_folder(tmp_path / "imagenet", None, "", strict_names=False, model_classes=None)
    assert unknown.labels.tolist() == [0, 0, 1, 1] and unknown.notice is None  # the model's classes unknown
    # The model's real class names from metadata: the folders are still indices, the names are the model's.
    names = tuple(f"class{i}" for i in range(1000))
    named = open_folder(tmp_path / "imagenet", names, "metadata", strict_names=False, model_classes=1000)
    assert named.labels.tolist() == [281, 281, 967, 967] and named.class_names[281] == "class281"
    with pytest.raises(DatasetError, match="not among the model's 1000 class names"):  # a labels file is the rule
        open_folder(tmp_path / "imagenet", names, "labels file x", strict_names=True, model_classes=1000)
    # 0..10: numeric order, not the sorted names' (0, 1, 10, 2, ...).
    write_class_folder(tmp_path / "eleven", per_class=1, classes=tuple(str(i) for i in range(11)))
    eleven = open_folder(tmp_path / "eleven", None, "", strict_names=False, model_classes=11)
    assert eleven.labels.tolist() == [0, 1, 10, *range(2, 10)] and "read as class indices" in eleven.notice
    # 0..2 for a 3-class model: the same as their sorted order, nothing to say.
    write_class_folder(tmp_path / "three", per_class=1, classes=("0", "1", "2"))
    assert open_folder(tmp_path / "three", None, "", strict_names=False, model_classes=3).notice is None
    # A number past the model's classes is no index: sorted order, and the count is warned about.
    write_class_folder(tmp_path / "past", per_class=1, classes=("5", "1000"))
    past = open_folder(tmp_path / "past", None, "", strict_names=False, model_classes=1000)
    assert past.labels.tolist() == [0, 1] and past.labels_from == "sorted folder names"
    assert "2 class folder(s) labelled 0..1 in sorted name order, but the model has 1000 classes" in past.notice
    write_class_folder(tmp_path / "pets", per_class=1, classes=("cat", "dog"))
    assert "but the model has 1000 classes" in open_folder(tmp_path / "pets", None, "", False, 1000).notice
    assert open_folder(tmp_path / "pets", None, "", False, 2).notice is None
    source = open_images(None, tmp_path / "pets", model_classes=1000)
    assert source.notice and source.labels.tolist() == [0, 1]


def test_unlabelled_folder_and_detection(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "flat"
    root.mkdir()
    for i in range(3):
        Image.fromarray(np.full((5, 7), 10 * i, np.uint8)).save(root / f"{i}.jpg")
    folder = scan_image_folder(root)
    assert not folder.labelled and folder.labels.tolist() == [-1, -1, -1]
    x = next(folder.batches(PRESETS["raw"].bind(10, 10, 3, "NHWC", "float32"), 8))[0]
    assert x.shape == (3, 10, 10, 3)  # grey JPEGs resized and made RGB by the record
    assert is_image_folder(root) and not is_image_folder(make_idx_dir(tmp_path / "idx"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        scan_image_folder(empty)
    with pytest.raises(DatasetError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage"])
def test_bad_images_are_named_or_skipped(tmp_path: Path, kind: str) -> None:
    write_class_folder(tmp_path / "imgs", per_class=2, classes=("a", "b"))
    bad = tmp_path / "imgs" / "b" / "bad.png"
    good = (tmp_path / "imgs" / "a" / "000.png").read_bytes()
    bad.write_bytes({"empty": b"", "truncated": good[: len(good) // 2], "garbage": b"not a png at all"}[kind])
    folder = scan_image_folder(tmp_path / "imgs")
    record = PRESETS["raw"].bind(12, 14, 3, "NHWC", "float32")
    with pytest.raises(BadImageError) as info:
        list(folder.batches(record, 2))
    assert str(bad) in info.value.one_line() and "--skip-bad-images" in info.value.one_line()
    skipped = SkippedImages()
    x = np.concatenate([b[0] for b in folder.batches(record, 2, skipped)])
    assert len(x) == 4 and skipped.count == 1 and str(bad) in skipped.examples[0]


def test_open_images_takes_a_folder_or_a_dataset(tmp_path: Path) -> None:
    write_class_folder(tmp_path / "imgs", per_class=2)
    src = open_images(None, tmp_path / "imgs")
    assert src.folder is not None and len(src) == 6 and src.provenance["kind"] == "image folder"
    with pytest.raises(DatasetError, match="disagree"):
        open_images("mnist", tmp_path / "imgs")
    ds = open_images(None, make_idx_dir(tmp_path / "idx"), split="train")
    assert ds.folder is None and len(ds) == 40 and ds.provenance["split"] == "train"
    record = PRESETS["unit"].bind(32, 32, 3, "NCHW", "float32")
    x, y = ds.head(5).load(record)
    assert x.shape == (5, 32, 32, 3) and len(y) == 5  # MNIST arrays fitted to a colour model


def test_take_spreads_over_the_classes_of_a_folder(tmp_path: Path) -> None:
    write_class_folder(tmp_path / "imgs", per_class=4, classes=("a", "b", "c"))
    src = open_images(None, tmp_path / "imgs")
    assert sorted(set(src.take(3).labels.tolist())) == [0, 1, 2]  # not the first three files, all of class a
    assert src.head(3).labels.tolist() == [0, 0, 0] and len(src.take(None)) == 12
