"""Atomic outputs: a file appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, OutputExistsError


def check_writable(path: Path, force: bool) -> None:
    """Refuse to overwrite ``path`` unless ``force``; fail early if its folder cannot be made."""
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists", hint="pass --force to overwrite it")
    if path.is_dir():
        raise CnnkitError(f"{path} is a directory, expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"cannot create folder {path.parent}: {exc.strerror}") from None


def check_output_dir(path: Path, force: bool) -> None:
    """An output folder must not be a file; an existing, non-empty one is replaced only with ``force``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CnnkitError(f"{path} is a file, expected a folder", hint="choose another output folder")
    if not force and path.is_dir() and any(path.iterdir()):
        raise OutputExistsError(f"{path} exists and is not empty", hint="pass --force to overwrite, or choose another folder")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the suffix, since some writers (Keras' ``model.save``) insist on it.
    On any exception, Ctrl-C included, the temporary file is removed and ``path`` is untouched.
    ``force=False`` refuses to replace an existing file. Default: replace.
    """
    final = Path(path)
    check_writable(final, force)
    tmp = final.with_name(f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced no file at {tmp}")
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, force: bool = True) -> Path:
    with atomic_path(path, force=force) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, force: bool = True) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), force=force)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, force: bool = True) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", force=force)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
