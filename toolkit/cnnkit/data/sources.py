"""Images for a model, from a named dataset's split or an image folder, in batches fitted by a preprocessing record.

Every consumer (eval, parity, quantize, featuremaps, predict) takes an :class:`ImageSource`, asks for batches
of uint8 pixels at the model's size and channels, and normalises them with the same record.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.folders import ImageFolder, SkippedImages, is_image_folder, read_labels_file, scan_image_folder
from cnnkit.errors import DatasetError
from cnnkit.graph import metadata as meta


@dataclass(frozen=True, eq=False)
class ImageSource:
    """Labelled (or unlabelled: labels -1) images: arrays of one dataset split, or an image folder."""

    provenance: dict[str, Any]
    class_names: tuple[str, ...]
    x: np.ndarray | None = None  # uint8 (N, h, w, c), any size: a dataset split in memory
    y: np.ndarray | None = None
    folder: ImageFolder | None = None
    notice: str | None = None  # a line the user should see (e.g. a fallback dataset)

    @classmethod
    def from_dataset(cls, dataset: Any, split: str = "test") -> ImageSource:
        x, y = (dataset.x_test, dataset.y_test) if split == "test" else (dataset.x_train, dataset.y_train)
        prov = dataset.describe() | {"kind": "dataset", "split": split, "samples": int(len(x))}
        return cls(prov, tuple(dataset.class_names), x, y, notice=getattr(dataset, "notice", None))

    @classmethod
    def from_folder(cls, folder: ImageFolder) -> ImageSource:
        return cls(folder.describe(), folder.class_names, folder=folder, notice=folder.notice)

    @property
    def name(self) -> str:
        return str(self.provenance.get("name"))

    @property
    def labels(self) -> np.ndarray:
        return self.folder.labels if self.folder is not None else np.asarray(self.y, np.int64)

    @property
    def labelled(self) -> bool:
        return self.folder.labelled if self.folder is not None else True

    def __len__(self) -> int:
        return len(self.folder) if self.folder is not None else len(self.x)  # type: ignore[arg-type]

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSource:
        idx = np.asarray(indices, dtype=np.int64)
        if self.folder is not None:
            folder = self.folder.subset(idx)
            return ImageSource(self.provenance | folder.describe(), self.class_names, folder=folder, notice=self.notice)
        return ImageSource(self.provenance | {"samples": int(len(idx))}, self.class_names, self.x[idx], self.y[idx],
                           notice=self.notice)

    def head(self, n: int | None) -> ImageSource:
        return self if n is None or n >= len(self) else self.subset(np.arange(n))

    def take(self, n: int | None) -> ImageSource:
        """``n`` images: a dataset split's first ``n`` (its order is mixed already); an image folder's ``n`` spread
        evenly over its sorted files, so that every class folder contributes (its first files would be one class)."""
        if self.folder is None or n is None or n >= len(self):
            return self.head(n)
        return self.subset(np.unique(np.linspace(0, len(self) - 1, n).round().astype(np.int64)))

    def batches(self, record: Any, batch_size: int, skipped: SkippedImages | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(pixels, labels)``: uint8 ``(n, H, W, C)`` fitted to the bound ``record`` (not yet normalised)."""
        if self.folder is not None:
            yield from self.folder.batches(record, batch_size, skipped)
            return
        for start in range(0, len(self.x), batch_size):  # type: ignore[arg-type]
            stop = start + batch_size
            yield record.fit_array(self.x[start:stop]), np.asarray(self.y[start:stop], np.int64)

    def load(self, record: Any, skipped: SkippedImages | None = None, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """All images at once (for small sources: calibration, parity samples)."""
        parts = list(self.batches(record, batch_size, skipped))
        if not parts:
            h, w = record.size
            return np.empty((0, h, w, record.channels), np.uint8), np.empty(0, np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def describe(self) -> dict[str, Any]:
        return dict(self.provenance)


def read_image_files(paths: Sequence[str | os.PathLike[str]], record: Any) -> list[np.ndarray]:
    """Image files named one by one, each fitted by ``record`` (uint8 ``(H, W, C)``); a missing file, a folder
    or an undecodable image is a one-line error."""
    from cnnkit.data.folders import BadImageError, open_image
    from cnnkit.errors import CnnkitError

    fitted = []
    for path in paths:
        if not Path(path).is_file():
            raise CnnkitError(f"image {path} not found" if not Path(path).exists() else f"{path} is not a file",
                              hint="give image files (JPEG, PNG, ...)")
        try:
            fitted.append(record.fit_image(open_image(Path(path))))
        except BadImageError as exc:
            raise CnnkitError(exc.message, hint="is it a complete JPEG or PNG file?") from None
    return fitted


def model_class_names(metadata: dict[str, str], labels_file: str | os.PathLike[str] | None = None
                      ) -> tuple[tuple[str, ...] | None, str]:
    """The model's class names, from a labels file or its metadata (``class_names``), and where they came from."""
    if labels_file is not None:
        return read_labels_file(labels_file), f"labels file {labels_file}"
    names = meta.class_names(metadata)
    return (names, "the model's class names (metadata)") if names is not None else (None, "")


def open_folder(root: str | os.PathLike[str], class_names: Sequence[str] | None, names_from: str,
                strict_names: bool, model_classes: int | None = None) -> ImageFolder:
    """Scan an image folder and label its class folders, the first rule that applies:

    * by the model's ``class_names``: always when ``strict_names`` (a labels file), else when every folder is
      among them;
    * as class indices when every folder name is a number below ``model_classes`` (ImageNet's ``281/``,
      ``967/``), said in the folder's notice where that differs from their sorted order;
    * an error when the model's names are real names (not "0", "1", ...) and the folders are not among them;
    * by their sorted order; the notice warns when their count is not ``model_classes``.
    """
    folder = scan_image_folder(root)
    if not folder.labelled:
        return folder
    if class_names is not None and (strict_names or set(folder.class_names) <= set(class_names)):
        return scan_image_folder(root, class_names, names_from)
    indices = _class_indices(folder.class_names, model_classes)
    if indices is not None and model_classes is not None:
        names = (tuple(class_names) if class_names is not None and len(class_names) == model_classes
                 else tuple(str(i) for i in range(model_classes)))
        notice = None
        if indices != list(range(len(indices))):
            shown = ", ".join(f"{n}/" for n in folder.class_names[:3]) + (", ..." if len(indices) > 3 else "")
            notice = (f"{folder.root}: class folders {shown} read as class indices of the model's {model_classes} "
                      f"classes (--labels FILE names them otherwise)")
        return replace(folder, labels=np.asarray(indices, np.int64)[folder.labels], class_names=names,
                       labels_from=f"folder names as class indices (0..{model_classes - 1})", notice=notice)
    if class_names is not None and not _numbered(class_names):
        return scan_image_folder(root, class_names, names_from)  # raises: the folders are not the model's names
    k = len(folder.class_names)
    if model_classes is not None and k != model_classes:
        return replace(folder, notice=(
            f"{folder.root}: {k} class folder(s) labelled 0..{k - 1} in sorted name order, but the model has "
            f"{model_classes} classes; unless they are its first {k} in that order, pass --labels FILE"))
    return folder


def _class_indices(folder_names: Sequence[str], model_classes: int | None) -> list[int] | None:
    """The folder names as class indices, when every one is a plain number below ``model_classes``."""
    if model_classes is None or not all(n.isascii() and n.isdigit() for n in folder_names):
        return None
    indices = [int(n) for n in folder_names]
    if len(set(indices)) != len(indices) or max(indices) >= model_classes:
        return None  # "7" and "07" are one class twice; a number past the outputs is not an index
    return indices


def _numbered(names: Sequence[str]) -> bool:
    return list(names) == [str(i) for i in range(len(names))]


def open_images(dataset: str | None, data_dir: str | os.PathLike[str] | None, split: str = "test",
                class_names: Sequence[str] | None = None, names_from: str = "", strict_names: bool = False,
                model: str | os.PathLike[str] | None = None, model_classes: int | None = None) -> ImageSource:
    """``--data-dir`` as an image folder (labelled as :func:`open_folder` says; ``model_classes``: the model's
    class count), else the named dataset's ``split`` (``test`` or ``train``); with ``model`` and no ``dataset``,
    the dataset the model's metadata names (never silently another one)."""
    from cnnkit.data.datasets import default_data_dir, load_dataset, load_dataset_for_model

    where = Path(data_dir) if data_dir is not None else default_data_dir()
    if where is not None and is_image_folder(where):
        if dataset is not None:
            raise DatasetError(f"--dataset {dataset} and --data-dir {where} (a folder of images) disagree",
                               hint="give one of them: an image folder needs no --dataset")
        return ImageSource.from_folder(open_folder(where, class_names, names_from, strict_names, model_classes))
    if model is not None:
        return ImageSource.from_dataset(load_dataset_for_model(model, dataset, data_dir, require_train=split == "train"),
                                        split)
    return ImageSource.from_dataset(load_dataset(dataset, data_dir, require_train=split == "train"), split)
