"""Folders of JPEG/PNG images, decoded with Pillow one batch at a time.

The convention of Keras' ``image_dataset_from_directory`` and torchvision's ``ImageFolder``: a folder of class
subfolders (``DIR/cat/001.jpg``, ``DIR/dog/7.png``; images found at any depth below a class folder), labels
from the sorted folder names; or a folder of unlabelled images (for calibration and parity). When the model's
classes are named (its metadata, or a labels file: one class name per line in the model's output order),
folder names are matched to those names instead.

Nothing but the file list is held in memory: a 50,000-image folder is read batch by batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import DatasetError, shorten

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DECODE_THREADS = 4  # Pillow decodes and resizes without the GIL
SKIP_HINT = "pass --skip-bad-images to go on without such files (the result counts them)"


class BadImageError(DatasetError):
    """An image file that is empty, corrupt or unreadable."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"image {path} cannot be read: {reason}", hint=SKIP_HINT)
        self.path = path
        self.reason = reason


@dataclass
class SkippedImages:
    """Bad images passed over under ``--skip-bad-images``: how many, and the first few with why."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, error: BadImageError) -> None:
        self.count += 1
        if len(self.examples) < 10:
            self.examples.append(f"{error.path}: {error.reason}")

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "examples": list(self.examples)}


@dataclass(frozen=True, eq=False)
class ImageFolder:
    """The files of an image folder and their labels (-1 for unlabelled)."""

    root: Path
    files: tuple[str, ...]  # relative to root, sorted
    labels: np.ndarray  # int64 per file; -1 when unlabelled
    class_names: tuple[str, ...]  # index -> name (the model's classes when they are named)
    labels_from: str | None  # "sorted folder names", "model's class names", "labels file X"; None: unlabelled
    notice: str | None = None  # how the labels were read, where the user should know (one line)

    @property
    def labelled(self) -> bool:
        return self.labels_from is not None

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageFolder:
        idx = np.asarray(indices, dtype=np.int64)
        return ImageFolder(self.root, tuple(self.files[i] for i in idx), self.labels[idx], self.class_names,
                           self.labels_from, self.notice)

    def describe(self) -> dict[str, Any]:
        per_class = np.bincount(self.labels[self.labels >= 0], minlength=len(self.class_names)) if self.labelled else []
        return {
            "name": "image-folder",
            "kind": "image folder",
            "source": str(self.root),
            "samples": len(self.files),
            "train_samples": 0,  # the same split-size fields as a dataset's provenance (all images serve as given)
            "test_samples": len(self.files),
            "labelled": self.labelled,
            "labels_from": self.labels_from,
            "classes": len(self.class_names),
            "images_per_class": {n: int(c) for n, c in zip(self.class_names, per_class, strict=False) if c},
            "fingerprint": self.fingerprint(),
        } | ({"notice": self.notice} if self.notice else {})

    def fingerprint(self) -> str:
        """SHA-256 over each file's relative path, label and size: which images these are, without reading them."""
        import hashlib

        digest = hashlib.sha256()
        for name, label in zip(self.files, self.labels.tolist(), strict=True):
            try:
                size = (self.root / name).stat().st_size
            except OSError:
                size = -1
            digest.update(f"{name}\0{label}\0{size}\n".encode())
        return digest.hexdigest()

    def read(self, index: int, record: Any) -> np.ndarray:
        """Image ``index`` decoded and fitted to the (bound) record: uint8 ``(H, W, C)``."""
        return record.fit_image(open_image(self.root / self.files[index]))

    def batches(self, record: Any, batch_size: int, skipped: SkippedImages | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(images, labels)`` batches: uint8 ``(n, H, W, C)`` fitted to the record. A bad image raises
        :class:`BadImageError` unless ``skipped`` collects it. Pillow decodes on a few threads (it releases
        the GIL), one batch ahead of the consumer."""
        from concurrent.futures import ThreadPoolExecutor

        def read_one(i: int) -> np.ndarray | BadImageError:
            try:
                return self.read(i, record)
            except BadImageError as exc:
                return exc

        def decode(start: int) -> list[np.ndarray | BadImageError]:
            return list(pool.map(read_one, range(start, min(start + batch_size, len(self.files)))))

        workers = max(1, min(DECODE_THREADS, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers + 1) as pool, ThreadPoolExecutor(1) as ahead:
            starts = list(range(0, len(self.files), batch_size))
            pending = ahead.submit(decode, starts[0]) if starts else None
            for k, start in enumerate(starts):
                decoded = pending.result()  # type: ignore[union-attr]
                pending = ahead.submit(decode, starts[k + 1]) if k + 1 < len(starts) else None
                keep = [j for j, d in enumerate(decoded) if not isinstance(d, BadImageError)]
                for d in decoded:
                    if isinstance(d, BadImageError):
                        if skipped is None:
                            if pending is not None:
                                pending.cancel()
                            raise d
                        skipped.add(d)
                if not keep:
                    continue
                x = np.stack([decoded[j] for j in keep])
                y = self.labels[start : start + len(decoded)][keep]
                yield x, y


def open_image(path: Path) -> Any:
    """A fully decoded PIL image; an empty, truncated, corrupt or unreadable file is a :class:`BadImageError`."""
    import warnings

    from PIL import Image

    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "the file is empty")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and palette warnings are not the user's problem
            with Image.open(path) as img:
                img.load()  # decode now: a truncated file fails here, not later
                return img.copy()
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError(path, f"too large to decode safely ({exc})") from None
    except PermissionError:
        raise BadImageError(path, "permission denied") from None
    except FileNotFoundError:
        raise BadImageError(path, "the file disappeared") from None
    except Exception as exc:  # noqa: BLE001 (Pillow raises OSError, SyntaxError, ValueError, zlib errors ...)
        reason = shorten(exc, 160) or type(exc).__name__
        if type(exc).__name__ == "UnidentifiedImageError":
            reason = "not an image Pillow can read"
        raise BadImageError(path, reason) from None


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def is_image_folder(path: str | os.PathLike[str]) -> bool:
    """A folder with image files directly in it, or in its subfolders (and no IDX or .npz dataset files)."""
    p = Path(path)
    if not p.is_dir():
        return False
    names = os.listdir(p)
    if any(n.endswith(("-ubyte", "-ubyte.gz", ".npz")) for n in names):
        return False
    if any(is_image_file(n) for n in names):
        return True
    return any((p / n).is_dir() and _has_images(p / n) for n in names if not n.startswith("."))


def _has_images(folder: Path) -> bool:
    for _dirpath, _dirs, files in os.walk(folder, followlinks=True):
        if any(is_image_file(f) for f in files):
            return True
    return False


def _images_below(folder: Path, root: Path) -> list[str]:
    out = []
    for dirpath, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        out += [os.path.join(rel, f) if rel != "." else f for f in sorted(files) if is_image_file(f)]
    return out


def read_labels_file(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """One class name per line, in the model's output order; blank lines at the end are ignored."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read labels file {p} ({getattr(exc, 'strerror', None) or exc})",
                           hint="one class name per line, in the model's output order") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = tuple(line.strip() for line in lines)
    if not names:
        raise DatasetError(f"labels file {p} is empty", hint="one class name per line, in the model's output order")
    if "" in names:
        raise DatasetError(f"labels file {p}: line {names.index('') + 1} is blank",
                           hint="one class name per line, in the model's output order")
    return names


def scan_image_folder(root: str | os.PathLike[str], class_names: Sequence[str] | None = None,
                      names_from: str = "model's class names") -> ImageFolder:
    """List the images of ``root``: class subfolders (labelled) or images directly in it (unlabelled).

    ``class_names``: the model's classes, when named (metadata or a labels file, ``names_from`` says which):
    folder names are matched to them and one that is not among them is an error. Otherwise labels are the
    indices of the sorted folder names.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"image folder {root} does not exist", hint="pass --data-dir with a folder of images")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder", hint="pass --data-dir with a folder of images")
    try:
        if not os.access(root, os.R_OK):
            raise PermissionError
        names = sorted(os.listdir(root))
    except PermissionError:
        raise DatasetError(f"cannot list image folder {root}: permission denied",
                           hint=f"check its permissions (ls -ld {root})") from None
    subdirs = [n for n in names if not n.startswith(".") and (root / n).is_dir() and _has_images(root / n)]
    if subdirs:
        if class_names is not None:
            missing = [d for d in subdirs if d not in class_names]
            if missing:
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                raise DatasetError(
                    f"{root}: class folder(s) {shown} are not among the model's {len(class_names)} class names "
                    f"({names_from})", hint="name the class folders after the model's classes, or pass --labels FILE")
            classes, index = tuple(class_names), {n: i for i, n in enumerate(class_names)}
            labels_from = names_from
        else:
            classes, index = tuple(subdirs), {n: i for i, n in enumerate(subdirs)}
            labels_from = "sorted folder names"
        files: list[str] = []
        labels: list[int] = []
        for d in subdirs:
            found = _images_below(root / d, root)
            files += found
            labels += [index[d]] * len(found)
        return ImageFolder(root, tuple(files), np.asarray(labels, np.int64), classes, labels_from)
    files = [n for n in names if is_image_file(n) and (root / n).is_file()]
    if not files:
        raise DatasetError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                           hint="give a folder of images, or of class subfolders of images")
    return ImageFolder(root, tuple(files), np.full(len(files), -1, np.int64), tuple(class_names or ()), None)
