"""Atomic outputs: a file appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, OutputError, OutputExistsError

NAME_MAX = 255  # bytes per file name on Linux file systems; os.pathconf says when it knows better
TEMP_MARK = ".tmp-"  # in every temporary file name, so leftovers of a killed run can be recognised
STAGING_MARK = ".staging-"

_OUTPUT_HINTS = {
    errno.ENOSPC: "free some space or write to another disk",
    errno.EDQUOT: "free some space or write to another disk",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "check the folder's permissions, or choose another folder",
    errno.EPERM: "check the folder's permissions, or choose another folder",
    errno.ENAMETOOLONG: f"file names can be at most {NAME_MAX} bytes: choose a shorter name",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def output_error(path: str | os.PathLike[str], exc: BaseException) -> OutputError | None:
    """The user error for an OSError (or an exception caused by one) met while writing ``path``; None if none."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _OUTPUT_HINTS:
            reason = os.strerror(exc.errno)
            return OutputError(f"cannot write {path}: {reason}", hint=_OUTPUT_HINTS[exc.errno])
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return None


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not _exists(path) and path != path.parent:
        path = path.parent
    return path


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError as exc:  # e.g. ENAMETOOLONG, EACCES on a parent
        raise output_error(path, exc) or CnnkitError(f"cannot check {path}: {exc.strerror}") from None


def _check_folder_writable(target: Path) -> None:
    """Fail early (before any work) when the folder that would receive ``target`` cannot be written."""
    folder = _nearest_existing(target.parent)
    if folder.is_dir() and not os.access(folder, os.W_OK):
        code = errno.EROFS if _read_only_fs(folder) else errno.EACCES
        raise output_error(target, OSError(code, os.strerror(code))) or CnnkitError(f"cannot write {target}")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_writable(path: Path, force: bool) -> None:
    """Refuse to overwrite ``path`` unless ``force``; fail early if its folder is missing or cannot be written.

    A missing folder is refused, not made (as ``cp`` and ``pip download -d`` do): a typo in it would
    otherwise scatter outputs over new folders unnoticed.
    """
    path = Path(path)
    _check_name_length(path)
    if path.is_dir():  # --force would not help: a folder is never replaced by a file
        raise CnnkitError(f"{path} is a directory, expected a file path", hint=f"name a file in it, e.g. {path / 'out.json'}")
    if _exists(path) and not force:
        raise OutputExistsError(f"{path} already exists", hint="pass --force to overwrite it")
    _check_folder_writable(path)
    check_parent_exists(path)


def check_parent_exists(path: Path) -> None:
    """Refuse an output whose folder does not exist (one line naming it, and the ``mkdir -p`` that makes it)."""
    parent = Path(path).absolute().parent
    if parent.is_dir():
        return
    shown = Path(path).parent
    if _exists(parent):
        raise CnnkitError(f"cannot write {path}: {shown} is a file, not a folder", hint="choose another output path")
    raise CnnkitError(f"cannot write {path}: the folder {shown} does not exist",
                      hint=f"create it first (mkdir -p {shown}), or choose an existing folder")


def check_not_input(output: str | os.PathLike[str], source: str | os.PathLike[str]) -> None:
    """Refuse an output that is the input file itself (``--force`` would otherwise replace the source)."""
    out, src = Path(output), Path(source)
    try:
        same = out.absolute() == src.absolute() or (out.exists() and src.exists() and os.path.samefile(out, src))
    except OSError:
        same = False
    if same:
        raise CnnkitError(f"the output {output} is the input model {source} itself",
                          hint="write to another file with -o; the input is never replaced")


def check_output_dir(path: Path, force: bool) -> None:
    """An output folder must not be a file; an existing, non-empty one is replaced only with ``force``."""
    path = Path(path)
    _check_name_length(path)
    if _exists(path) and not path.is_dir():
        raise CnnkitError(f"{path} is a file, expected a folder", hint="choose another output folder")
    if not force and path.is_dir() and any(path.iterdir()):
        raise OutputExistsError(f"{path} exists and is not empty", hint="pass --force to overwrite, or choose another folder")
    _check_folder_writable(path / "x")
    check_parent_exists(path)  # the folder itself is made; the one it goes into must exist


def _check_name_length(path: Path) -> None:
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise output_error(path, OSError(errno.ENAMETOOLONG, "")) or CnnkitError(f"{path}: name too long")


def _name_max(folder: Path) -> int:
    try:
        return min(NAME_MAX, os.pathconf(_nearest_existing(folder), "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX


def temp_sibling(final: Path, mark: str = TEMP_MARK, keep_suffix: bool = True) -> Path:
    """A hidden, unique name beside ``final`` that fits the file system's name limit (the stem is shortened)."""
    suffix = final.suffix if keep_suffix else ""
    tail = f"{mark}{uuid.uuid4().hex[:8]}{suffix}"
    stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
    room = _name_max(final.parent) - len(os.fsencode("." + tail))
    encoded = os.fsencode(stem)[: max(room, 0)]
    return final.with_name("." + encoded.decode("utf-8", "ignore") + tail)


def is_leftover(path: Path) -> bool:
    """A temporary file or staging folder that cnnkit made and a killed run left behind."""
    return path.name.startswith(".") and (TEMP_MARK in path.name or STAGING_MARK in path.name or ".old-" in path.name)


def remove_leftovers(folder: Path, prefix: str = "") -> list[Path]:
    """Remove what :func:`is_leftover` recognises in ``folder`` (with ``prefix``: those of ``folder/prefix`` only)."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    start = f".{prefix}." if prefix else "."
    for p in folder.iterdir():
        if is_leftover(p) and p.name.startswith(start):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(p)
    return removed


@contextlib.contextmanager
def staged_dir(out_dir: Path, force: bool) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out_dir``; swap it in for ``out_dir`` only if the block succeeds.

    A failure (full disk, Ctrl-C) leaves ``out_dir`` as it was and removes the staging folder.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    try:
        staging = temp_sibling(out_dir, STAGING_MARK, keep_suffix=False)
        staging.mkdir()
    except OSError as exc:
        raise output_error(out_dir, exc) or CnnkitError(f"cannot create folder {out_dir}: {exc.strerror}") from None
    try:
        try:
            yield staging
            if out_dir.exists():
                old = temp_sibling(out_dir, ".old-", keep_suffix=False)
                os.replace(out_dir, old)
                os.replace(staging, out_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, out_dir)
        except Exception as exc:
            error = output_error(out_dir, exc)
            if error is None:
                raise
            raise error from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the suffix, since some writers (Keras' ``model.save``) insist on it, and fits
    the name limit. Disk full, read-only, permission denied or a name too long is an :class:`OutputError`
    naming ``path``. On any exception, Ctrl-C included, the temporary file is removed and ``path`` is untouched.
    ``force=False`` refuses to replace an existing file. Default: replace.
    """
    final = Path(path)
    check_writable(final, force)
    tmp = temp_sibling(final)
    try:
        try:
            yield tmp
            if not tmp.exists():
                raise RuntimeError(f"writer produced no file at {tmp}")
            os.replace(tmp, final)
        except Exception as exc:  # an OSError of the file system is the user's to fix, named by their path
            error = output_error(final, exc)
            if error is None:
                raise
            raise error from None
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
    """Strict JSON: a NaN or Inf in ``obj`` raises ValueError (a bug: results hold null and a reason instead)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n", force=force)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
